"""The OA system finflow keeps in step with: read from the environment; no base URL means the adapter is off.

| variable | what |
|---|---|
| FINFLOW_OA_SYSTEM | which OA speaks there: `weaver` (泛微 e-cology E9, the default; see adapters/oa/system.py) |
| FINFLOW_OA_BASE_URL | the OA server, e.g. https://oa.example.com (the simulator: http://127.0.0.1:8020) |
| FINFLOW_OA_APPID | the appid registered for finflow in E9 (ECOLOGY_BIZ_EC) |
| FINFLOW_OA_PRIVATE_KEY_FILE | finflow's RSA private key (PEM); its public half is the `cpk` sent to /auth/regist |
| FINFLOW_OA_SECRET, FINFLOW_OA_SPK | optional: secret and server key of an earlier regist (else finflow registers) |
| FINFLOW_OA_CALLBACK_SECRET | the shared secret of /oa/callback's HMAC (the E9 node Action signs with it) |
| FINFLOW_OA_POLL_SECONDS | how often open requests are read back from OA for missed callbacks (default 120; 0: never) |
| FINFLOW_OA_TIMEOUT | seconds an OA call may take (default 10) |

The secrets (FINFLOW_OA_SECRET, FINFLOW_OA_SPK, FINFLOW_OA_CALLBACK_SECRET, the key file's content) may be
given sealed (`finflow secrets seal --for oa`, opened with FINFLOW_SECRET_KEY) or, as before, plain.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from engine import crypto

PURPOSE = "oa"  # what OA credentials are sealed for, configured or cached (engine.crypto)


@dataclass(frozen=True)
class OAConfig:
    base_url: str
    appid: str
    private_key_pem: bytes
    callback_secret: str
    system: str = "weaver"
    secret: str | None = None
    spk: str | None = None
    poll_seconds: int = 120
    timeout: float = 10.0

    @classmethod
    def from_env(cls) -> OAConfig | None:
        env = os.environ.get
        base_url = env("FINFLOW_OA_BASE_URL", "").strip().rstrip("/")
        if not base_url:
            return None
        missing = [n for n in ("APPID", "PRIVATE_KEY_FILE", "CALLBACK_SECRET") if not env(f"FINFLOW_OA_{n}")]
        if missing:
            raise ValueError("FINFLOW_OA_BASE_URL is set but not " + ", ".join(f"FINFLOW_OA_{m}" for m in missing))
        key_file = Path(env("FINFLOW_OA_PRIVATE_KEY_FILE", ""))
        try:
            content = key_file.read_bytes()
            poll, timeout = int(env("FINFLOW_OA_POLL_SECONDS", "120")), float(env("FINFLOW_OA_TIMEOUT", "10"))
        except OSError as exc:
            raise ValueError(f"FINFLOW_OA_PRIVATE_KEY_FILE {key_file} cannot be read: {exc}") from exc
        except ValueError as exc:
            raise ValueError(f"FINFLOW_OA_POLL_SECONDS and FINFLOW_OA_TIMEOUT must be numbers: {exc}") from exc
        return cls(base_url=base_url, appid=env("FINFLOW_OA_APPID", ""), private_key_pem=_private_key(content),
                   callback_secret=_open("FINFLOW_OA_CALLBACK_SECRET") or "", system=env("FINFLOW_OA_SYSTEM", "weaver"),
                   secret=_open("FINFLOW_OA_SECRET") or None, spk=_open("FINFLOW_OA_SPK") or None,
                   poll_seconds=max(0, poll), timeout=timeout)


def _open(name: str) -> str | None:
    """A variable given plain or sealed (`finflow secrets seal --for oa`); crypto.SettingError (a ValueError,
    like any bad variable) when it does not open."""
    return crypto.setting(os.environ.get(name), PURPOSE, name)


def _private_key(content: bytes) -> bytes:
    """The key file holds the PEM itself or, sealed, one `enc:v1:…` line (`finflow secrets seal --for oa
    < key.pem > key.sealed`), so a copy of the file alone is not the key."""
    text = content.strip()
    if not text.startswith(crypto.PREFIX.encode()):
        return content
    return (crypto.setting(text.decode("ascii", "replace"), PURPOSE, "FINFLOW_OA_PRIVATE_KEY_FILE") or "").encode()


def configured() -> bool:
    """Whether an OA system is configured (a half-done configuration counts as none here)."""
    try:
        return OAConfig.from_env() is not None
    except ValueError:
        return False
