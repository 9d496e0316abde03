"""Rate limits (api/ratelimits.py): a login, callback or 催办 flood gets 429 with Retry-After and the API's
error body; other addresses and users are not held back; counters are shared through Redis by every API
process; "off" and the test setting disable them."""

from __future__ import annotations

import re

import pytest
from redis import Redis
from redis.exceptions import RedisError

from api import create_app
from engine.db import transaction
from engine.services import passwords
from engine.services.auth import issue_token
from tests.helpers import claim, start

REDIS_URL = "redis://127.0.0.1:6379/13"  # a database no other test uses; flushed by the test using it
PASSWORD = "limit-pass-2026"
ATTACKER, COLLEAGUE = {"REMOTE_ADDR": "203.0.113.7"}, {"REMOTE_ADDR": "203.0.113.8"}


def limited_app(**config):
    return create_app({"TESTING": True, "RATELIMIT_ENABLED": True, **config})


def try_login(client, login: str, password: str, environ: dict | None = None, **kwargs):
    """The login form as a browser posts it: its form token first, then the credentials."""
    form = client.get("/login", environ_base=environ)
    token = re.search(r'name="form_token" value="([^"]+)"', form.get_data(as_text=True)).group(1)
    return client.post("/login", data={"form_token": token, "login": login, "password": password, "next": "/m/"},
                       environ_base=environ, **kwargs)


def assert_rate_limited(response, limit: str) -> None:
    assert response.status_code == 429, response.get_data(as_text=True)
    assert 1 <= int(response.headers["Retry-After"]) <= 3601
    error = response.json["error"]
    assert error["code"] == "rate_limited" and "请求过于频繁" in error["message"]
    assert error["details"] == {"limit": limit, "retry_after": int(response.headers["Retry-After"])}


# -- the test setting -----------------------------------------------------------------------------------

def test_tests_are_not_limited_unless_they_ask(app):
    assert "finflow_limiter" not in app.extensions
    client = app.test_client()
    assert all(client.post("/login", data={}).status_code == 403 for _ in range(15))


def test_finflow_rate_limits_off_disables_every_limit(monkeypatch):
    monkeypatch.setenv("FINFLOW_RATE_LIMITS", "off")
    app = create_app()  # not TESTING: what `finflow serve` builds
    assert "finflow_limiter" not in app.extensions and app.config["RATELIMIT_ENABLED"] is False


def test_a_server_is_limited_by_default(monkeypatch):
    monkeypatch.delenv("FINFLOW_RATE_LIMITS", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    app = create_app()
    assert app.extensions["finflow_limiter"] is not None and app.config["RATELIMIT_STORAGE_URI"] == "memory://"


# -- login ------------------------------------------------------------------------------------------------

def test_a_login_flood_is_429_with_retry_after_and_other_addresses_still_log_in():
    with transaction() as session:
        passwords.set_password(session, "guoxin", PASSWORD)
    client = limited_app().test_client()  # the default: 10 refused attempts a minute per address
    for attempt in range(10):  # credential stuffing: another login each time
        assert try_login(client, f"user{attempt}", "guess", ATTACKER).status_code == 401
    assert_rate_limited(try_login(client, "guoxin", PASSWORD, ATTACKER), "10 per 1 minute")
    colleague = try_login(client, "guoxin", PASSWORD, COLLEAGUE)
    assert colleague.status_code == 303 and colleague.headers["Location"] == "/m/"


def test_a_browser_gets_the_message_page_with_retry_after():
    client = limited_app(FINFLOW_RATE_LOGIN="2/minute").test_client()
    for _ in range(2):
        try_login(client, "nobody", "guess", ATTACKER)
    page = try_login(client, "nobody", "guess", ATTACKER, headers={"Accept": "text/html,*/*;q=0.8"})
    assert page.status_code == 429 and page.mimetype == "text/html" and int(page.headers["Retry-After"]) >= 1
    assert "请求过于频繁" in page.get_data(as_text=True)


def test_successful_logins_do_not_count_so_an_office_behind_one_address_logs_in():
    with transaction() as session:
        for user in ("guoxin", "suxiaoyun", "fengli"):
            passwords.set_password(session, user, PASSWORD)
    client = limited_app(FINFLOW_RATE_LOGIN="2/minute").test_client()
    for _ in range(2):
        for user in ("guoxin", "suxiaoyun", "fengli"):
            assert try_login(client, user, PASSWORD, ATTACKER).status_code == 303
    assert try_login(client, "guoxin", "wrong", ATTACKER).status_code == 401
    assert try_login(client, "guoxin", "wrong", ATTACKER).status_code == 401
    assert_rate_limited(try_login(client, "guoxin", PASSWORD, ATTACKER), "2 per 1 minute")


def test_a_forged_x_forwarded_for_does_not_buy_a_fresh_counter():
    client = limited_app(FINFLOW_RATE_LOGIN="2/minute").test_client()
    for n in range(2):
        client.post("/login", data={}, environ_base=ATTACKER, headers={"X-Forwarded-For": f"198.51.100.{n}"})
    again = client.post("/login", data={}, environ_base=ATTACKER, headers={"X-Forwarded-For": "198.51.100.99"})
    assert_rate_limited(again, "2 per 1 minute")


def test_behind_a_trusted_proxy_the_forwarded_client_is_counted():
    client = limited_app(FINFLOW_RATE_LOGIN="2/minute", TRUSTED_PROXY_HOPS=1).test_client()
    proxy = {"REMOTE_ADDR": "10.0.0.1"}
    for _ in range(2):
        client.post("/login", data={}, environ_base=proxy, headers={"X-Forwarded-For": "198.51.100.1"})
    assert client.post("/login", data={}, environ_base=proxy,
                       headers={"X-Forwarded-For": "198.51.100.1"}).status_code == 429
    assert client.post("/login", data={}, environ_base=proxy,
                       headers={"X-Forwarded-For": "198.51.100.2"}).status_code == 403  # another client


@pytest.fixture
def wecom_env(monkeypatch):
    for name, value in {"CORP_ID": "wwfinflowtest", "AGENT_ID": "1000002", "SECRET": "s", "TOKEN": "finflowtoken",
                        "AES_KEY": "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
                        "API_BASE": "http://127.0.0.1:9", "PUBLIC_URL": "http://finflow.test"}.items():
        monkeypatch.setenv(f"FINFLOW_WECOM_{name}", value)
    monkeypatch.delenv("REDIS_URL", raising=False)


def test_the_wecom_oauth_callback_is_a_login_too(wecom_env):
    client = limited_app(FINFLOW_RATE_LOGIN="3/minute").test_client()
    for _ in range(3):
        assert client.get("/wecom/oauth/callback?code=c&state=s", environ_base=ATTACKER).status_code == 403
    assert_rate_limited(client.get("/wecom/oauth/callback?code=c&state=s", environ_base=ATTACKER), "3 per 1 minute")
    assert client.get("/wecom/oauth/callback?code=c&state=s", environ_base=COLLEAGUE).status_code == 403


# -- callbacks ------------------------------------------------------------------------------------------

def test_a_wecom_callback_flood_is_429(wecom_env):
    client = limited_app(FINFLOW_RATE_CALLBACK="5/minute").test_client()
    for _ in range(5):
        answer = client.post("/wecom/callback?msg_signature=x&timestamp=1&nonce=n", data=b"<xml/>",
                             content_type="text/xml", environ_base=ATTACKER)
        assert answer.status_code == 200 and answer.data == b""  # refused quietly, as WeCom expects
    flood = client.post("/wecom/callback?msg_signature=x&timestamp=1&nonce=n", data=b"<xml/>",
                        content_type="text/xml", environ_base=ATTACKER)
    assert_rate_limited(flood, "5 per 1 minute")
    assert client.get("/wecom/callback", environ_base=ATTACKER).status_code == 403  # its own counter
    assert client.post("/wecom/callback", data=b"<xml/>", environ_base=COLLEAGUE).status_code == 200


def test_an_oa_callback_flood_is_429():
    client = limited_app(FINFLOW_RATE_CALLBACK="5/minute").test_client()
    for _ in range(5):
        assert client.post("/oa/callback", json={}, environ_base=ATTACKER).status_code in (401, 404)
    assert_rate_limited(client.post("/oa/callback", json={}, environ_base=ATTACKER), "5 per 1 minute")


def test_the_default_callback_limit_lets_a_wecom_burst_through(wecom_env):
    """WeCom's burst is 200 clicks a second from a few addresses; the default is 500 a second per address."""
    client = limited_app().test_client()
    answers = [client.post("/wecom/callback?msg_signature=x&timestamp=1&nonce=n", data=b"<xml/>",
                           content_type="text/xml", environ_base=ATTACKER).status_code for _ in range(300)]
    assert answers == [200] * 300


# -- 催办 -------------------------------------------------------------------------------------------------

def token(user: str) -> dict:
    with transaction() as session:
        return {"Authorization": f"Bearer {issue_token(session, user, 'test')}"}


def test_urge_is_limited_per_user_on_top_of_the_once_an_hour_rule():
    client = limited_app(FINFLOW_RATE_URGE="3/hour").test_client()
    mine = [start("reimbursement", "suxiaoyun", claim()) for _ in range(3)]
    first, second = token("suxiaoyun"), token("suxiaoyun")  # two tokens of one user share the counter
    assert client.post(f"/api/v1/instances/{mine[0]}/urge", json={}, headers=first).status_code == 200
    again = client.post(f"/api/v1/instances/{mine[0]}/urge", json={}, headers=first)
    assert again.status_code == 429 and again.json["error"]["code"] != "rate_limited"  # the service's rule, kept
    assert client.post(f"/api/v1/instances/{mine[1]}/urge", json={}, headers=second).status_code == 200
    assert_rate_limited(client.post(f"/api/v1/instances/{mine[2]}/urge", json={}, headers=second), "3 per 1 hour")
    theirs = start("reimbursement", "guoxin", claim())  # the same address, another user
    assert client.post(f"/api/v1/instances/{theirs}/urge", json={}, headers=token("guoxin")).status_code == 200


def test_an_unauthenticated_urge_is_still_a_401():
    client = limited_app(FINFLOW_RATE_URGE="1/hour").test_client()
    iid = start("reimbursement", "suxiaoyun", claim())
    assert [client.post(f"/api/v1/instances/{iid}/urge", json={}).status_code for _ in range(3)] == [401] * 3


# -- settings ---------------------------------------------------------------------------------------------

def test_off_disables_one_limit():
    client = limited_app(FINFLOW_RATE_LOGIN="off", FINFLOW_RATE_CALLBACK="1/minute").test_client()
    assert all(client.post("/login", data={}, environ_base=ATTACKER).status_code == 403 for _ in range(15))
    client.post("/oa/callback", json={}, environ_base=ATTACKER)
    assert client.post("/oa/callback", json={}, environ_base=ATTACKER).status_code == 429


def test_limits_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("FINFLOW_RATE_LOGIN", "1/minute")
    client = limited_app().test_client()
    client.post("/login", data={}, environ_base=ATTACKER)
    assert_rate_limited(client.post("/login", data={}, environ_base=ATTACKER), "1 per 1 minute")


def test_a_bad_limit_is_refused_at_start_naming_the_setting(monkeypatch):
    monkeypatch.setenv("FINFLOW_RATE_URGE", "twenty an hour")
    with pytest.raises(ValueError, match="FINFLOW_RATE_URGE"):
        limited_app()


# -- several API processes ---------------------------------------------------------------------------------

@pytest.fixture
def shared_redis(monkeypatch):
    redis = Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=2)
    try:
        redis.flushdb()
    except RedisError:
        pytest.skip(f"no Redis at {REDIS_URL}")
    monkeypatch.setenv("REDIS_URL", REDIS_URL)
    yield redis
    redis.flushdb()


def test_two_api_processes_share_the_counter_through_redis(shared_redis):
    one, two = (limited_app(FINFLOW_RATE_LOGIN="3/minute").test_client() for _ in range(2))
    assert one.application.config["RATELIMIT_STORAGE_URI"] == REDIS_URL
    for client in (one, two, one):
        assert client.post("/login", data={}, environ_base=ATTACKER).status_code == 403
    assert_rate_limited(two.post("/login", data={}, environ_base=ATTACKER), "3 per 1 minute")
    assert_rate_limited(one.post("/login", data={}, environ_base=ATTACKER), "3 per 1 minute")
    assert one.post("/login", data={}, environ_base=COLLEAGUE).status_code == 403
    keys = shared_redis.keys("*")
    assert keys and all(key.startswith(b"finflow:ratelimit:") for key in keys)


def test_while_redis_is_down_each_process_counts_in_memory(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens on port 1
    client = limited_app(FINFLOW_RATE_LOGIN="2/minute").test_client()
    answers = [client.post("/login", data={}, environ_base=ATTACKER).status_code for _ in range(3)]
    assert answers == [403, 403, 429]  # answered, not a 500, and still limited
