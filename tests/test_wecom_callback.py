"""The WeCom callback: WXBizMsgCrypt against the official sample and wechatpy, and /wecom/callback's
answers: URL verification, every kind of bad callback answered 200 "" with nothing applied, retries
stored once, lost jobs re-queued."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from wechatpy.enterprise.crypto import WeChatCrypto

from adapters.wecom import callback
from adapters.wecom.crypto import CallbackRejected, MsgCrypt, fields, parse_xml, signature
from adapters.wecom.models import WeComCallback
from engine import clock
from engine.db import transaction
from engine.models import HistoryEvent
from engine.outbox import dispatch

SAMPLE = {"token": "QDG6eK", "corp": "wx5823bf96d3bd56c7", "key": "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
          "signature": "477715d11cdb4164915debcba66cb864d751f3e6", "timestamp": "1409659813", "nonce": "1372623149",
          "encrypt": "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj911"
                     "L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06DOdnLxAUHz"
                     "M6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCKIw+3IQH03v+BCA9nMELNq"
                     "bSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY"
                     "6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyPIGHBZZIs2pDBS8R07+qN+E7Q=="}
TOKEN, AES_KEY, CORP = "finflowtoken", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "wwfinflowtest"
CLICK = ("<xml><ToUserName><![CDATA[wwfinflowtest]]></ToUserName><FromUserName><![CDATA[{user}]]></FromUserName>"
         "<CreateTime>{at}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
         "<Event><![CDATA[template_card_event]]></Event><TaskId><![CDATA[{card}]]></TaskId>"
         "<CardType><![CDATA[button_interaction]]></CardType><EventKey><![CDATA[{key}]]></EventKey>"
         "<ResponseCode><![CDATA[rc-{at}]]></ResponseCode><AgentID>1000002</AgentID></xml>")


def sample_envelope() -> bytes:
    return (f"<xml><ToUserName><![CDATA[{SAMPLE['corp']}]]></ToUserName><Encrypt><![CDATA[{SAMPLE['encrypt']}]]>"
            "</Encrypt><AgentID><![CDATA[218]]></AgentID></xml>").encode()


def test_official_sample_vector_decrypts():
    crypt = MsgCrypt(SAMPLE["token"], SAMPLE["key"], SAMPLE["corp"])
    event = fields(crypt.open(sample_envelope(), SAMPLE["signature"], SAMPLE["timestamp"], SAMPLE["nonce"],
                              now=int(SAMPLE["timestamp"])))
    assert event["FromUserName"] == "mycreate" and event["Content"] == "hello" and event["ToUserName"] == SAMPLE["corp"]


def test_round_trips_with_wechatpy_both_ways():
    ours, theirs = MsgCrypt(TOKEN, AES_KEY, CORP), WeChatCrypto(TOKEN, AES_KEY, CORP)
    message = CLICK.format(user="zhangsan", at=int(time.time()), card="ff1abc", key="approve:t1")
    sealed = theirs.encrypt_message(message, "nonce1")  # wechatpy seals, we open
    envelope = fields(callback_parse(sealed))
    opened = fields(ours.open(sealed.encode(), envelope["MsgSignature"], envelope["TimeStamp"], envelope["Nonce"]))
    assert opened["EventKey"] == "approve:t1"
    ours_sealed = ours.seal(message, "nonce2")  # we seal, wechatpy opens
    envelope = fields(callback_parse(ours_sealed))
    assert theirs.decrypt_message(ours_sealed, envelope["MsgSignature"], envelope["TimeStamp"], "nonce2") == message


def callback_parse(envelope: str | bytes):
    return parse_xml(envelope.encode() if isinstance(envelope, str) else envelope)


@pytest.mark.parametrize("tamper", ["ciphertext", "signature", "corp"])
def test_tampered_messages_are_rejected(tamper):
    crypt = MsgCrypt(TOKEN, AES_KEY, CORP)
    sealed = crypt.seal("<xml><A>1</A></xml>", "n1")
    envelope = fields(callback_parse(sealed))
    signature, encrypt = envelope["MsgSignature"], envelope["Encrypt"]
    if tamper == "ciphertext":
        sealed = sealed.replace(encrypt, ("B" if encrypt[0] != "B" else "C") + encrypt[1:])
    elif tamper == "signature":
        signature = ("0" if signature[0] != "0" else "1") + signature[1:]
    else:
        crypt = MsgCrypt(TOKEN, AES_KEY, "wwsomeoneelse")
    with pytest.raises(CallbackRejected):
        crypt.open(sealed.encode(), signature, envelope["TimeStamp"], envelope["Nonce"])


# -- the endpoint ---------------------------------------------------------------------------------

@pytest.fixture
def wecom_env(monkeypatch):
    for name, value in {"CORP_ID": CORP, "AGENT_ID": "1000002", "SECRET": "s", "TOKEN": TOKEN,
                        "AES_KEY": AES_KEY, "API_BASE": "http://127.0.0.1:9"}.items():
        monkeypatch.setenv(f"FINFLOW_WECOM_{name}", value)
    monkeypatch.delenv("REDIS_URL", raising=False)


def post(client, sealed: str | bytes, params: dict | None = None):
    body = sealed.encode() if isinstance(sealed, str) else sealed
    if params is None:
        envelope = fields(callback_parse(body))
        params = {"msg_signature": envelope["MsgSignature"], "timestamp": envelope["TimeStamp"],
                  "nonce": envelope["Nonce"]}
    return client.post("/wecom/callback", query_string=params, data=body, content_type="text/xml")


def counts() -> tuple[int, int]:
    with transaction() as session:
        return (session.scalar(select(func.count()).select_from(WeComCallback)),
                session.scalar(select(func.count()).select_from(HistoryEvent)))


def test_url_verification(app, wecom_env):
    crypt, ts = MsgCrypt(TOKEN, AES_KEY, CORP), str(int(time.time()))
    echostr = crypt.encrypt("echo-1234")
    good = {"msg_signature": signature(TOKEN, ts, "n", echostr), "timestamp": ts, "nonce": "n", "echostr": echostr}
    answer = app.test_client().get("/wecom/callback", query_string=good)
    assert answer.status_code == 200 and answer.text == "echo-1234"
    bad = app.test_client().get("/wecom/callback", query_string={**good, "msg_signature": "0" * 40})
    assert bad.status_code == 403 and "signature" in bad.text


def test_wecom_off_is_404(app, monkeypatch):
    monkeypatch.delenv("FINFLOW_WECOM_CORP_ID", raising=False)
    assert app.test_client().post("/wecom/callback", data=b"<xml/>").status_code == 404
    assert app.test_client().get("/wecom/callback").status_code == 404


def hostile_callbacks() -> list[tuple[str, bytes, dict | None]]:
    crypt, now = MsgCrypt(TOKEN, AES_KEY, CORP), int(time.time())
    click = CLICK.format(user="zhangsan", at=now, card="ffnone", key="approve:x")
    good = crypt.seal(click, "n1")
    envelope = fields(callback_parse(good))
    params = {"msg_signature": envelope["MsgSignature"], "timestamp": envelope["TimeStamp"], "nonce": "n1"}
    stale = crypt.seal(click, "n2", timestamp=str(now - 3600))
    other_corp = MsgCrypt(TOKEN, AES_KEY, "wwother").seal(click, "n3")
    bomb = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>'
            b"<xml><Encrypt>&b;</Encrypt></xml>")
    return [
        ("forged signature", good.encode(), {**params, "msg_signature": "f" * 40}),
        ("no signature", good.encode(), {}),
        ("tampered", good.replace(envelope["Encrypt"][:8], "AAAAAAAA").encode(), params),
        ("stale timestamp", stale.encode(), None),
        ("wrong corp id", other_corp.encode(), None),
        ("truncated", good.encode()[: len(good) // 2], params),
        ("oversized", b"<xml><Encrypt>" + b"A" * (70 * 1024) + b"</Encrypt></xml>", params),
        ("beyond the API's body limit", b"<xml><Encrypt>" + b"A" * (2 * 1024 * 1024) + b"</Encrypt></xml>", params),
        ("not XML", b"hello, finflow", params),
        ("empty", b"", params),
        ("JSON", b'{"Encrypt": "x"}', params),
        ("DTD and entities", bomb, params),
        ("binary", bytes(range(256)) * 4, params),
        ("not base64", b"<xml><Encrypt>!!!not base64!!!</Encrypt></xml>", params),
        ("bad timestamp", good.encode(), {**params, "timestamp": "yesterday"}),
    ]


@pytest.mark.parametrize("name", [name for name, _, _ in hostile_callbacks()])
def test_every_bad_callback_gets_empty_200_and_applies_nothing(app, wecom_env, name, caplog):
    _, body, params = next(c for c in hostile_callbacks() if c[0] == name)
    before = counts()
    answer = post(app.test_client(), body, params)
    assert answer.status_code == 200 and answer.data == b""
    dispatch.drain_background()
    assert counts() == before
    assert any("wecom callback" in r.getMessage() for r in caplog.records)


def test_a_retry_is_stored_once(app, wecom_env):
    crypt = MsgCrypt(TOKEN, AES_KEY, CORP)
    click = CLICK.format(user="zhangsan", at=int(time.time()), card="ffnone", key="approve:x")
    sealed = crypt.seal(click, "n1")
    client = app.test_client()
    for _ in range(3):  # WeCom's retries are the same event, maybe with another envelope
        assert post(client, sealed).data == b""
        assert post(client, crypt.seal(click, "n2")).data == b""
    dispatch.drain_background()
    with transaction() as session:
        rows = list(session.scalars(select(WeComCallback)))
    assert len(rows) == 1 and rows[0].status == "refused"


def test_a_lost_job_is_requeued(app, wecom_env, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("Redis is down")

    run_job = dispatch.run_job
    monkeypatch.setattr(dispatch, "run_job", refuse)
    click = CLICK.format(user="zhangsan", at=int(time.time()), card="ffnone", key="approve:x")
    assert post(app.test_client(), MsgCrypt(TOKEN, AES_KEY, CORP).seal(click, "n1")).data == b""
    with transaction() as session:
        assert session.scalar(select(WeComCallback.status)) == "received"
    monkeypatch.setattr(dispatch, "run_job", run_job)
    assert callback.requeue_stale() == 0  # too young: its job may still be on the way
    clock.advance(timedelta(seconds=31))
    assert callback.requeue_stale() == 1
    dispatch.drain_background()
    with transaction() as session:
        assert session.scalar(select(WeComCallback.status)) == "refused"

