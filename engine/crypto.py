"""Secrets at rest: what finflow stores of a credential (a webhook's HMAC key, a cached OA secret, a
user's TOTP seed) is sealed with a key from the environment, so a copy of the database or of Redis is
not a copy of the credentials.

`FINFLOW_SECRET_KEY` holds one or more keys, comma-separated, newest first: values are sealed with the
first and opened with any (rotation: put the new key first, run `finflow secrets rotate`, drop the old
one). Each key is any string of 32+ characters; Fernet keys are derived from it with HKDF, one per
purpose, so a value sealed for one use cannot be replayed as another. Without the variable (the demo on
a laptop) a random key is written once to `<data dir>/secret.key`; a deployment of several machines must
set the variable, or each would seal with its own key.

Fernet (cryptography) does the sealing: AES-128-CBC with an HMAC-SHA256, authenticated and versioned.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from engine.config import DEFAULT_DATA_DIR

log = logging.getLogger("finflow.crypto")

PREFIX = "enc:v1:"
MIN_KEY_LENGTH = 32
KEY_FILE = "secret.key"


class SecretKeyError(RuntimeError):
    """The configured key is unusable, or a sealed value does not open with any configured key."""


class SettingError(SecretKeyError, ValueError):
    """A sealed configuration value (`setting`) does not open: a configuration error, named after its variable."""


def seal(plaintext: str, purpose: str) -> str:
    """`plaintext` sealed for `purpose` (e.g. "webhook", "totp"): `enc:v1:<fernet token>`."""
    return PREFIX + _fernet(purpose).encrypt(plaintext.encode("utf-8")).decode("ascii")


def unseal(sealed: str, purpose: str) -> str:
    """The plaintext of a value `seal` made for the same purpose; SecretKeyError when it does not open."""
    if not is_sealed(sealed):
        raise SecretKeyError(f"the stored {purpose} secret is not sealed (expected {PREFIX}…)")
    try:
        return _fernet(purpose).decrypt(sealed[len(PREFIX):].encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeError) as exc:  # another key, another purpose, or a mangled value
        raise SecretKeyError(f"the stored {purpose} secret does not open with FINFLOW_SECRET_KEY "
                             "(was the key changed without a rotation?)") from exc


def unseal_cached(cached: bytes | str | None, purpose: str) -> str | None:
    """A credential cached sealed (in Redis) opened; None when absent, written plain by an older finflow, or
    sealed with keys no longer configured: the caller then fetches it again (a rotation drops such caches;
    this covers a missed one). Raises nothing, so a stale cache never fails a call."""
    value = cached.decode() if isinstance(cached, bytes) else cached
    if not value:
        return None
    try:
        return unseal(value, purpose)
    except SecretKeyError as exc:
        log.warning("a cached %s credential is ignored and fetched again: %s", purpose, exc)
        return None


def reseal(sealed: str, purpose: str) -> str:
    """The same secret sealed with the newest key (rotation)."""
    return seal(unseal(sealed, purpose), purpose)


def sealed_with_newest(sealed: str, purpose: str) -> bool:
    """Whether `sealed` opens with the first (newest) key: once all do, older keys may be dropped."""
    if not is_sealed(sealed):
        return False
    try:
        _keyring(_keys(), purpose)[0].decrypt(sealed[len(PREFIX):].encode("ascii"))
    except (InvalidToken, UnicodeError):
        return False
    return True


def setting(value: str | None, purpose: str, name: str | None = None) -> str | None:
    """A secret from configuration: given sealed (`finflow secrets seal`) or, as before, plain. One that
    does not open raises SettingError, a ValueError like any other bad variable, so the adapters treat it
    as they treat a half-done configuration (logged; the approval that caused an event is not failed)."""
    if value is None or not is_sealed(value):
        return value
    try:
        return _opened_setting(value, purpose, _keys())
    except SecretKeyError as exc:
        raise SettingError(f"{name or f'a sealed {purpose} setting'}: {exc}") from exc


@lru_cache(maxsize=64)
def _opened_setting(value: str, purpose: str, keys: str) -> str:
    """Configuration is read again on every event (`WeComConfig.from_env`): opened once per value and keys."""
    return unseal(value, purpose)


def is_sealed(value: str) -> bool:
    return value.startswith(PREFIX)


def _fernet(purpose: str) -> MultiFernet:
    return _fernets(_keys(), purpose)


def _keys() -> str:
    return os.environ.get("FINFLOW_SECRET_KEY") or _key_file()


@lru_cache(maxsize=64)
def _fernets(keys: str, purpose: str) -> MultiFernet:
    return MultiFernet(list(_keyring(keys, purpose)))


@lru_cache(maxsize=64)
def _keyring(keys: str, purpose: str) -> tuple[Fernet, ...]:
    """One Fernet per configured key, newest first."""
    raw = [k.strip() for k in keys.split(",") if k.strip()]
    short = [i for i, k in enumerate(raw) if len(k) < MIN_KEY_LENGTH]
    if not raw or short:
        raise SecretKeyError(f"FINFLOW_SECRET_KEY: every key must have at least {MIN_KEY_LENGTH} characters")
    return tuple(Fernet(_derive(k, purpose)) for k in raw)


def _derive(key: str, purpose: str) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"finflow", info=purpose.encode("utf-8"))
    return base64.urlsafe_b64encode(hkdf.derive(key.encode("utf-8")))


def _key_file() -> str:
    """The embedded key: created once (0600) beside the SQLite file, read by every later process."""
    path = Path(os.environ.get("FINFLOW_DATA_DIR", DEFAULT_DATA_DIR)) / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first: read theirs
        else:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(48))
    return path.read_text().strip()
