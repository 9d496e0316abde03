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
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


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
            pem = key_file.read_bytes()
            poll, timeout = int(env("FINFLOW_OA_POLL_SECONDS", "120")), float(env("FINFLOW_OA_TIMEOUT", "10"))
        except OSError as exc:
            raise ValueError(f"FINFLOW_OA_PRIVATE_KEY_FILE {key_file} cannot be read: {exc}") from exc
        except ValueError as exc:
            raise ValueError(f"FINFLOW_OA_POLL_SECONDS and FINFLOW_OA_TIMEOUT must be numbers: {exc}") from exc
        return cls(base_url=base_url, appid=env("FINFLOW_OA_APPID", ""), private_key_pem=pem,
                   callback_secret=env("FINFLOW_OA_CALLBACK_SECRET", ""), system=env("FINFLOW_OA_SYSTEM", "weaver"),
                   secret=env("FINFLOW_OA_SECRET") or None, spk=env("FINFLOW_OA_SPK") or None,
                   poll_seconds=max(0, poll), timeout=timeout)


def configured() -> bool:
    """Whether an OA system is configured (a half-done configuration counts as none here)."""
    try:
        return OAConfig.from_env() is not None
    except ValueError:
        return False
