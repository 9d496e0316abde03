"""Secrets at rest: a webhook secret is only sealed in the database and deliveries still verify, `finflow
secrets rotate` reseals with the new key (and the old key alone then fails `secrets check`), a key that
opens nothing is a clear error (API, CLI, a delivery that is retried), migration 0011 seals the plain rows
it finds, and sealed WeCom / OA settings and Redis caches open."""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.util
import json
from datetime import timedelta

import fakeredis
import httpx
import pytest
from alembic import command
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import create_engine, text

from adapters.oa import weaver
from adapters.oa.config import OAConfig
from adapters.wecom import client as wecom_client
from adapters.wecom.config import WeComConfig
from adapters.wecom.config import configured as wecom_configured
from engine import clock, crypto
from engine.cli import main
from engine.db import get_engine
from engine.migrate import MIGRATIONS, alembic_config
from engine.models import User
from engine.outbox.dispatch import connection
from engine.outbox.sweeper import sweep
from tests import events_support, outbox_support
from tests.conftest import DATABASE_URL
from tests.events_support import deliveries, settle, subscribe
from tests.helpers import claim, start

embedded = outbox_support.embedded
events_out = events_support.events_out
receiver = events_support.receiver

OLD, NEW = "old-key-" + "o" * 40, "new-key-" + "n" * 40
ADMIN = "zhangwei"


@pytest.fixture(autouse=True)
def key(monkeypatch) -> None:
    monkeypatch.setenv("FINFLOW_SECRET_KEY", OLD)


def raw_secrets() -> dict[str, str | None]:
    with get_engine(DATABASE_URL).connect() as conn:
        return dict(conn.execute(text("SELECT id, secret FROM event_subscriptions")).all())


def raw_totp() -> str:
    with get_engine(DATABASE_URL).connect() as conn:
        return conn.execute(text("SELECT totp_secret FROM users WHERE id = 'suxiaoyun'")).scalar_one()


def verifies(secret: str, request: events_support.Received) -> bool:
    """What a receiver checks (the README's snippet): HMAC-SHA256(secret, timestamp + "." + body)."""
    timestamp = request.headers["X-Finflow-Timestamp"]
    expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + request.body,
                                    hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, request.headers["X-Finflow-Signature"])


def secrets_cli(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, ["secrets", *args], input=input)


# -- webhook secrets ----------------------------------------------------------------------------------
@pytest.mark.usefixtures("events_out", "embedded")
def test_a_webhook_secret_is_stored_sealed_shown_once_and_deliveries_verify(receiver, app, as_user):
    created = as_user(ADMIN).post("/api/v1/event-subscriptions", json={
        "name": "ERP", "kind": "webhook", "url": receiver.url, "event_types": ["instance.started"]})
    assert created.status_code == 201, created.get_json()
    subscription_id, secret = created.get_json()["id"], created.get_json()["secret"]

    stored = raw_secrets()[subscription_id]
    assert stored.startswith("enc:v1:") and secret not in stored
    assert crypto.unseal(stored, "webhook") == secret
    with pytest.raises(crypto.SecretKeyError):
        crypto.unseal(stored, "wecom")  # sealed for webhooks only
    shown = as_user(ADMIN).get(f"/api/v1/event-subscriptions/{subscription_id}").get_json()
    assert "secret" not in shown and secret not in json.dumps(shown)
    assert secret not in json.dumps(as_user(ADMIN).get("/api/v1/event-subscriptions").get_json())

    start("reimbursement", "suxiaoyun", claim())
    settle()
    [request] = receiver.requests
    assert verifies(secret, request) and not verifies(secret + "x", request)


@pytest.mark.usefixtures("events_out", "embedded")
def test_a_key_that_does_not_open_the_secret_fails_the_delivery_visibly_and_it_is_retried(receiver, monkeypatch):
    target, secret = subscribe("webhook", receiver.url, event_types=["instance.started"])
    monkeypatch.setenv("FINFLOW_SECRET_KEY", NEW)  # the old key was dropped without a rotation
    start("reimbursement", "suxiaoyun", claim())
    settle()

    [row] = deliveries(target)
    assert row.status == "pending" and row.attempts == 1 and receiver.requests == []
    assert row.last_error.startswith("SecretKeyError: the stored webhook secret does not open with "
                                     "FINFLOW_SECRET_KEY")
    assert "cryptography" not in row.last_error.splitlines()[0]

    monkeypatch.setenv("FINFLOW_SECRET_KEY", f"{NEW},{OLD}")  # the operator puts the old key back
    clock.advance(timedelta(hours=2))
    sweep()
    settle()
    [row] = deliveries(target)
    assert row.status == "done" and row.attempts == 2
    assert verifies(secret, receiver.requests[0])


@pytest.mark.usefixtures("events_out", "embedded")
def test_an_unusable_key_is_a_json_error_in_the_api_and_one_line_in_the_cli(receiver, app, as_user, monkeypatch):
    monkeypatch.setenv("FINFLOW_SECRET_KEY", "too-short")
    created = as_user(ADMIN).post("/api/v1/event-subscriptions", json={
        "name": "ERP", "kind": "webhook", "url": receiver.url, "event_types": ["instance.started"]})
    assert created.status_code == 500
    error = created.get_json()["error"]
    assert error["code"] == "secret_key_error" and "FINFLOW_SECRET_KEY" in error["message"]
    assert error["details"] == {"setting": "FINFLOW_SECRET_KEY"}
    assert raw_secrets() == {}  # nothing half-created

    result = CliRunner().invoke(main, ["events", "create", "--kind", "webhook", "--name", "ERP", "--url",
                                       receiver.url, "--type", "instance.*"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "error: FINFLOW_SECRET_KEY: every key must have at least 32 characters" in result.output
    assert raw_secrets() == {}

    checked = secrets_cli("check")
    assert checked.exit_code == 1 and "FINFLOW_SECRET_KEY: every key must have" in checked.output


# -- rotation and check --------------------------------------------------------------------------------
@pytest.mark.usefixtures("embedded")
def test_rotation_reseals_every_row_with_the_new_key_and_the_old_key_alone_then_fails_check(receiver,
                                                                                            monkeypatch):
    made = dict(subscribe("webhook", receiver.url, name=f"hook {n}") for n in range(3))
    before = raw_secrets()
    totp = hasattr(User, "totp_secret")  # users' TOTP seeds (the second factor), when the model has them
    if totp:
        with get_engine(DATABASE_URL).begin() as conn:
            conn.execute(text("UPDATE users SET totp_secret = :s WHERE id = 'suxiaoyun'"),
                         {"s": crypto.seal("JBSWY3DPEHPK3PXP", "totp")})
    redis = connection(None)  # embedded mode's in-process Redis
    weaver.drop_cached_credentials(redis)  # what earlier tests of this process cached
    wecom_client.drop_cached_credentials(redis)
    oa_token = f"{weaver.CACHE_PREFIX}http://oa.example:finflow:token"
    wecom_token, wecom_lock = f"{wecom_client.TOKEN_PREFIX}ww1:1000002", f"{wecom_client.TOKEN_PREFIX}ww1:1000002:lock"
    for name in (oa_token, wecom_token, wecom_lock):
        redis.set(name, "x")

    monkeypatch.setenv("FINFLOW_SECRET_KEY", f"{NEW},{OLD}")
    checked = secrets_cli("check")
    assert checked.exit_code == 0, checked.output
    assert "event_subscriptions.secret: 3 open (3 sealed with an older key" in checked.output

    rotated = secrets_cli("rotate")
    assert rotated.exit_code == 0, rotated.output
    assert "event_subscriptions.secret: 3 resealed" in rotated.output
    if totp:
        assert "users.totp_secret: 1 resealed" in rotated.output
        assert crypto.sealed_with_newest(raw_totp(), "totp") and crypto.unseal(raw_totp(), "totp") == "JBSWY3DPEHPK3PXP"
    assert "2 cached OA/WeCom credential(s) dropped" in rotated.output
    assert redis.get(oa_token) is None and redis.get(wecom_token) is None and redis.get(wecom_lock) == b"x"
    after = raw_secrets()
    assert all(after[i] != before[i] and crypto.unseal(after[i], "webhook") == made[i] for i in made)
    assert "event_subscriptions.secret: 3 open\n" in secrets_cli("check").output

    monkeypatch.setenv("FINFLOW_SECRET_KEY", NEW)  # the old key dropped: everything still opens
    assert secrets_cli("check").exit_code == 0

    monkeypatch.setenv("FINFLOW_SECRET_KEY", OLD)  # a process left with only the old key
    failed = secrets_cli("check")
    assert failed.exit_code == 1
    for subscription_id in made:
        assert f"error: event_subscriptions.secret {subscription_id}: the stored webhook secret does not open " \
               "with FINFLOW_SECRET_KEY" in failed.output
    if totp:
        assert "error: users.totp_secret suxiaoyun: the stored totp secret does not open" in failed.output
    assert f"{3 + totp} secret(s): do not open with FINFLOW_SECRET_KEY" in failed.output

    refused = secrets_cli("rotate")  # nothing opens: nothing is written
    assert refused.exit_code == 1 and "nothing was resealed" in refused.output
    assert raw_secrets() == after


@pytest.mark.usefixtures("embedded")
def test_check_names_a_sealed_setting_that_does_not_open(monkeypatch):
    monkeypatch.setenv("FINFLOW_WECOM_SECRET", crypto.seal("corp-secret", "wecom"))
    monkeypatch.setenv("FINFLOW_OA_SECRET", crypto.seal("oa-secret", "oa"))
    assert secrets_cli("check").exit_code == 0
    monkeypatch.setenv("FINFLOW_SECRET_KEY", NEW)
    failed = secrets_cli("check")
    assert failed.exit_code == 1
    assert "error: FINFLOW_WECOM_SECRET: the stored wecom secret does not open" in failed.output
    assert "error: FINFLOW_OA_SECRET: the stored oa secret does not open" in failed.output


def test_seal_reads_stdin_and_prints_a_value_that_opens_for_its_purpose_only():
    result = secrets_cli("seal", "--for", "wecom", input="corp-secret-42\n")
    assert result.exit_code == 0, result.output
    sealed = result.output.strip()
    assert sealed.startswith("enc:v1:") and "corp-secret-42" not in sealed
    assert crypto.unseal(sealed, "wecom") == "corp-secret-42"
    with pytest.raises(crypto.SecretKeyError):
        crypto.unseal(sealed, "oa")
    assert secrets_cli("seal", "--for", "wecom", input="").exit_code == 2  # nothing given
    assert secrets_cli("seal", "--for", "ldap", input="x").exit_code == 2


# -- migration 0011 ---------------------------------------------------------------------------------------
def _migration():
    spec = importlib.util.spec_from_file_location("m0011", MIGRATIONS / "versions" / "0011_sealed_secrets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _insert_plain(conn, subscription_id: str, secret: str | None) -> None:
    conn.execute(text(
        "INSERT INTO event_subscriptions (id, name, kind, url, secret, process_keys, event_types, status, "
        "created_at, updated_at, version) VALUES (:id, 'old', 'webhook', 'http://127.0.0.1:1/', :secret, '[]', "
        "'[\"*\"]', 'active', :now, :now, 1)"), {"id": subscription_id, "secret": secret, "now": "2026-01-05 09:00:00"})


@pytest.fixture
def scratch_database(tmp_path):
    """A connection to an empty database of the test's dialect (a file, or a PostgreSQL schema)."""
    if DATABASE_URL.startswith("sqlite"):
        engine = create_engine(f"sqlite:///{tmp_path / 'migration.db'}")
        with engine.connect() as conn:
            yield conn
        engine.dispose()
        return
    engine = create_engine(DATABASE_URL)
    with engine.connect() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS sealed_migration CASCADE"))
        conn.execute(text("CREATE SCHEMA sealed_migration"))
        conn.execute(text("SET search_path TO sealed_migration"))
        conn.commit()
        yield conn
        conn.rollback()
        conn.execute(text("SET search_path TO public"))
        conn.execute(text("DROP SCHEMA sealed_migration CASCADE"))
        conn.commit()
    engine.dispose()


def test_migration_0011_seals_the_plain_rows_it_finds_and_its_downgrade_opens_them(scratch_database):
    conn = scratch_database
    config = alembic_config(DATABASE_URL)
    config.attributes["connection"] = conn
    command.upgrade(config, "0010")
    plain = "p" * 43  # what token_urlsafe(32) made
    _insert_plain(conn, "11111111-1111-1111-1111-111111111111", plain)
    _insert_plain(conn, "22222222-2222-2222-2222-222222222222", None)  # a RabbitMQ subscription
    conn.commit()

    command.upgrade(config, "0011")
    rows = dict(conn.execute(text("SELECT id, secret FROM event_subscriptions ORDER BY id")).all())
    sealed = rows["11111111-1111-1111-1111-111111111111"]
    assert sealed.startswith("enc:v1:") and len(sealed) > 128 and crypto.unseal(sealed, "webhook") == plain
    assert rows["22222222-2222-2222-2222-222222222222"] is None
    assert _migration().seal_plain_rows(conn) == 0  # again: nothing left to seal
    conn.commit()

    command.downgrade(config, "0010")
    rows = dict(conn.execute(text("SELECT id, secret FROM event_subscriptions ORDER BY id")).all())
    assert rows == {"11111111-1111-1111-1111-111111111111": plain, "22222222-2222-2222-2222-222222222222": None}
    conn.commit()


# -- WeCom and OA settings and caches -------------------------------------------------------------------------
WECOM_ENV = {"FINFLOW_WECOM_CORP_ID": "ww1", "FINFLOW_WECOM_AGENT_ID": "1000002"}


def test_wecom_settings_given_sealed_are_opened_and_one_that_does_not_open_is_a_bad_variable(monkeypatch):
    for name, value in WECOM_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FINFLOW_WECOM_SECRET", crypto.seal("corp-secret", "wecom"))
    monkeypatch.setenv("FINFLOW_WECOM_TOKEN", crypto.seal("callback-token", "wecom"))
    monkeypatch.setenv("FINFLOW_WECOM_AES_KEY", "a" * 43)  # plain still works
    config = WeComConfig.from_env()
    assert (config.secret, config.token, config.aes_key) == ("corp-secret", "callback-token", "a" * 43)

    monkeypatch.setenv("FINFLOW_SECRET_KEY", NEW)
    with pytest.raises(ValueError, match="FINFLOW_WECOM_SECRET: the stored wecom secret does not open with "
                                         "FINFLOW_SECRET_KEY"):
        WeComConfig.from_env()
    assert not wecom_configured()  # the login page offers passwords; callbacks log the reason


def test_the_wecom_access_token_is_cached_sealed_and_shared():
    calls = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path.endswith("/gettoken"):
            assert request.url.params["corpsecret"] == "corp-secret"
            return httpx.Response(200, json={"errcode": 0, "access_token": "ACCESS-TOKEN-1", "expires_in": 7200})
        assert request.url.params["access_token"] == "ACCESS-TOKEN-1"
        return httpx.Response(200, json={"errcode": 0, "userid": "suxiaoyun"})

    config = WeComConfig(corp_id="ww1", agent_id=1000002, secret="corp-secret", token="t", aes_key="a" * 43)
    redis = fakeredis.FakeRedis()
    http = httpx.Client(transport=httpx.MockTransport(answer))
    wecom_client.WeComClient(config, redis, http).user("suxiaoyun")
    cached = redis.get(f"{wecom_client.TOKEN_PREFIX}ww1:1000002").decode()
    assert cached.startswith("enc:v1:") and "ACCESS-TOKEN-1" not in cached
    wecom_client.WeComClient(config, redis, http).user("suxiaoyun")  # another process: the cached token
    assert calls.count("/cgi-bin/gettoken") == 1

    redis.set(f"{wecom_client.TOKEN_PREFIX}ww1:1000002", "ACCESS-TOKEN-1")  # plain, from before sealing
    wecom_client.WeComClient(config, redis, http).user("suxiaoyun")
    assert calls.count("/cgi-bin/gettoken") == 2  # not trusted: fetched again, sealed
    assert wecom_client.drop_cached_credentials(redis) == 1


def _rsa_pem() -> tuple[bytes, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return pem, key


def test_oa_settings_and_a_sealed_key_file_are_opened(monkeypatch, tmp_path):
    pem, _ = _rsa_pem()
    sealed_file = tmp_path / "finflow-oa.key.sealed"
    sealed_file.write_text(crypto.seal(pem.decode(), "oa") + "\n")
    env = {"FINFLOW_OA_BASE_URL": "http://oa.example", "FINFLOW_OA_APPID": "finflow",
           "FINFLOW_OA_PRIVATE_KEY_FILE": str(sealed_file), "FINFLOW_OA_CALLBACK_SECRET": crypto.seal("cb", "oa"),
           "FINFLOW_OA_SECRET": crypto.seal("e9-secret", "oa"), "FINFLOW_OA_SPK": "plain-spk"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = OAConfig.from_env()
    assert config.private_key_pem == pem
    assert (config.callback_secret, config.secret, config.spk) == ("cb", "e9-secret", "plain-spk")
    serialization.load_pem_private_key(config.private_key_pem, password=None)

    monkeypatch.setenv("FINFLOW_SECRET_KEY", NEW)
    with pytest.raises(ValueError, match="FINFLOW_OA_PRIVATE_KEY_FILE: the stored oa secret does not open"):
        OAConfig.from_env()


def test_the_oa_registration_and_token_are_cached_sealed():
    pem, _ = _rsa_pem()
    _, server = _rsa_pem()
    spk = base64.b64encode(server.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    calls = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path.endswith("/regist"):
            return httpx.Response(200, json={"status": True, "secret": "E9-SECRET", "spk": spk})
        assert request.url.path.endswith("/applytoken")
        return httpx.Response(200, json={"status": True, "token": "E9-TOKEN"})

    config = OAConfig(base_url="http://oa.example", appid="finflow", private_key_pem=pem, callback_secret="cb")
    redis = fakeredis.FakeRedis()
    http = httpx.Client(transport=httpx.MockTransport(answer))
    assert weaver.WeaverClient(config, redis, http).token() == "E9-TOKEN"
    prefix = f"{weaver.CACHE_PREFIX}http://oa.example:finflow"
    for name, plain in (("registration", "E9-SECRET"), ("token", "E9-TOKEN")):
        cached = redis.get(f"{prefix}:{name}").decode()
        assert cached.startswith("enc:v1:") and plain not in cached
    assert json.loads(crypto.unseal(redis.get(f"{prefix}:registration").decode(), "oa"))["secret"] == "E9-SECRET"
    assert weaver.WeaverClient(config, redis, http).token() == "E9-TOKEN"  # another process: from the cache
    assert calls.count("/api/ec/dev/auth/regist") == 1 and calls.count("/api/ec/dev/auth/applytoken") == 1
    assert weaver.drop_cached_credentials(redis) == 2
    assert redis.keys(f"{prefix}:*") == []


def test_the_key_file_is_made_once_and_used_when_the_variable_is_unset(monkeypatch, tmp_path):
    monkeypatch.delenv("FINFLOW_SECRET_KEY")
    monkeypatch.setenv("FINFLOW_DATA_DIR", str(tmp_path))
    sealed = crypto.seal("s", "webhook")
    key_file = tmp_path / crypto.KEY_FILE
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert crypto.unseal(sealed, "webhook") == "s"
    monkeypatch.setenv("FINFLOW_SECRET_KEY", key_file.read_text().strip())  # the same key, given explicitly
    assert crypto.unseal(sealed, "webhook") == "s"
