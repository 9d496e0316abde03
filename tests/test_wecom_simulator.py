"""The simulator speaks WeCom's protocol: finflow's client against it over real HTTP, and its own checks."""

from __future__ import annotations

import threading

import httpx
import pytest

from adapters.wecom.client import Transient, WeComClient, WeComError
from adapters.wecom.crypto import MsgCrypt
from engine.outbox.dispatch import connection
from tests.wecom_support import wecom  # noqa: F401  (the fixture)

REDIS = "redis://127.0.0.1:6379/11"


@pytest.fixture
def redis():
    client = connection(REDIS)
    client.flushdb()
    yield client
    client.flushdb()


def client_for(bed, redis) -> WeComClient:
    return WeComClient(bed.config, redis, timeout=httpx.Timeout(2.0, connect=2.0))


def text(userid: str, content: str = "你好") -> dict:
    return {"touser": userid, "msgtype": "text", "text": {"content": content}}


def card(task_id: str, **extra) -> dict:
    return {"touser": "suxiaoyun", "msgtype": "template_card", "template_card": {
        "card_type": "button_interaction", "main_title": {"title": "费用报销 · 苏小云 · ¥1,200.00"},
        "task_id": task_id, "card_action": {"type": 1, "url": "http://127.0.0.1/m/tasks/x"},
        "button_list": [{"text": "同意", "style": 1, "key": "approve:x"},
                        {"text": "驳回", "style": 2, "key": "reject:x"}],
        **extra}}


def test_the_token_is_fetched_once_and_shared_by_every_process(wecom, redis):  # noqa: F811
    first, second = client_for(wecom, redis), client_for(wecom, redis)  # two processes: one Redis
    results: list[str] = []
    threads = [threading.Thread(target=lambda c=c: results.append(c.access_token())) for c in [first, second] * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    assert wecom.sim.calls_to("gettoken") == 1  # no thundering herd


def test_an_expired_token_is_refreshed_once_and_the_call_made_again(wecom, redis):  # noqa: F811
    client = client_for(wecom, redis)
    client.send(text("suxiaoyun", "一"))
    wecom.sim.expire_tokens()
    answer = client.send(text("suxiaoyun", "二"))
    assert answer["errcode"] == 0 and wecom.sim.calls_to("gettoken") == 2
    assert [m["text"]["content"] for m in wecom.sim.inbox("suxiaoyun")] == ["一", "二"]


def test_errcodes_and_broken_answers_become_clear_errors(wecom, redis):  # noqa: F811
    client = client_for(wecom, redis)
    for kind, expected in (("rate_limit", Transient), ("http500", Transient), ("html", Transient),
                           ("errcode:60020", WeComError), ("errcode:-1", Transient)):
        wecom.sim.fault(kind, api="message/send")
        with pytest.raises(expected) as caught:
            client.send(text("suxiaoyun"))
        assert caught.type is expected, kind
    assert caught.value.errcode == -1
    wecom.sim.fault("errcode:60020", api="message/send")
    with pytest.raises(WeComError, match="60020"):
        client.send(text("suxiaoyun"))


def test_a_timeout_is_transient(wecom, redis):  # noqa: F811
    client = client_for(wecom, redis)
    client.access_token()
    wecom.sim.fault("timeout", api="message/send")
    with pytest.raises(Transient, match="timeout"):
        client.send(text("suxiaoyun"))


def test_send_validates_cards_and_recipients_as_wecom_does(wecom, redis):  # noqa: F811
    client = client_for(wecom, redis)
    answer = client.send({**card("ff-1"), "touser": "suxiaoyun|nobody"})
    assert answer["invaliduser"] == "nobody" and answer["response_code"]
    with pytest.raises(WeComError) as duplicate:
        client.send(card("ff-1"))
    assert duplicate.value.errcode == 42014
    for bad, errcode in ((card("bad id!"), 42014), (card("ff-2", button_list=[]), 40058),
                         ({**card("ff-3"), "touser": "nobody"}, 81013), (text("suxiaoyun", ""), 44004),
                         ({"touser": "suxiaoyun", "msgtype": "voice", "voice": {}}, 40008)):
        with pytest.raises(WeComError) as refused:
            client.send(bad)
        assert refused.value.errcode == errcode
    wecom.sim.visible = {"zhaoqiang"}  # the app's visible range
    with pytest.raises(WeComError, match="81013"):
        client.send(text("suxiaoyun"))


def test_a_response_code_updates_the_card_once(wecom, redis):  # noqa: F811
    client = client_for(wecom, redis)
    code = client.send(card("ff-9"))["response_code"]
    client.update_card(["suxiaoyun"], code, "已同意")
    assert wecom.sim.card("suxiaoyun", "ff-9")["state"] == "已同意"
    with pytest.raises(WeComError, match="40098"):
        client.update_card(["suxiaoyun"], code, "已驳回")
    expired = client.send(card("ff-10"))["response_code"]
    wecom.sim.clock_offset = 73 * 3600
    with pytest.raises(WeComError, match="40098"):
        client.update_card(["suxiaoyun"], expired, "已同意")


def test_contacts_and_oauth_codes(wecom, redis):  # noqa: F811
    client = client_for(wecom, redis)
    departments = client.departments()
    assert departments[0]["parentid"] == 0 and len(departments) == len(wecom.sim.org["departments"])
    members = client.users_of(departments[0]["id"])
    assert all(departments[0]["id"] in m["department"] for m in members)
    assert client.user("suxiaoyun")["name"] == wecom.sim.user("suxiaoyun")["name"]
    with pytest.raises(WeComError, match="60111"):
        client.user("nobody")
    login = httpx.get(client.authorize_url("http://127.0.0.1:1/back?x=1", "s1"), cookies={"sim_userid": "zhaoqiang"})
    assert login.status_code == 302
    code = httpx.URL(login.headers["Location"]).params["code"]
    assert httpx.URL(login.headers["Location"]).params["state"] == "s1"
    assert client.userid_by_code(code) == "zhaoqiang"
    with pytest.raises(WeComError, match="40029"):
        client.userid_by_code(code)  # a code works once


def test_a_click_is_an_encrypted_signed_callback(wecom, redis):  # noqa: F811
    received: list[tuple[bytes, dict]] = []
    from werkzeug.serving import make_server
    from werkzeug.wrappers import Request, Response

    def app(environ, start_response):
        request = Request(environ)
        received.append((request.get_data(), request.args.to_dict()))
        return Response("")(environ, start_response)

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    wecom.sim.callback_url = f"http://127.0.0.1:{server.server_port}/wecom/callback"
    client_for(wecom, redis).send(card("ff-click"))
    with pytest.raises(ValueError):
        wecom.sim.click("zhaoqiang", "ff-click", "approve:x")  # he never got that card
    assert wecom.sim.click("suxiaoyun", "ff-click", "approve:x").status_code == 200
    server.shutdown()
    body, params = received[0]
    crypt = MsgCrypt(wecom.config.token, wecom.config.aes_key, wecom.config.corp_id)
    event = {child.tag: child.text for child in crypt.open(body, params["msg_signature"], params["timestamp"],
                                                           params["nonce"])}
    assert event["Event"] == "template_card_event" and event["FromUserName"] == "suxiaoyun"
    assert event["TaskId"] == "ff-click" and event["EventKey"] == "approve:x" and event["ResponseCode"]


def test_the_inbox_page_shows_a_persons_cards(wecom, redis):  # noqa: F811
    client_for(wecom, redis).send(card("ff-page"))
    page = httpx.get(f"{wecom.sim.url}/?u=suxiaoyun")
    assert page.status_code == 200 and "费用报销 · 苏小云" in page.text and "同意" in page.text
    assert page.cookies.get("sim_userid") == "suxiaoyun"
    assert "width=device-width" in page.text
