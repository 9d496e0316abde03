"""The WeCom app finflow speaks as: read from the environment; no corp id means the adapter is off.

| variable | what |
|---|---|
| FINFLOW_WECOM_CORP_ID | 企业ID (corpid); also the receive id of callbacks |
| FINFLOW_WECOM_AGENT_ID | the self-built app's AgentId |
| FINFLOW_WECOM_SECRET | the app's Secret (gettoken) |
| FINFLOW_WECOM_TOKEN, FINFLOW_WECOM_AES_KEY | the callback's Token and EncodingAESKey |
| FINFLOW_WECOM_API_BASE | server API, default https://qyapi.weixin.qq.com (the simulator, a private deployment) |
| FINFLOW_WECOM_OAUTH_BASE | OAuth2 authorize host, default https://open.weixin.qq.com |
| FINFLOW_PUBLIC_URL | where approvers' phones reach finflow: 详情 links and the OAuth2 redirect |
| FINFLOW_WECOM_ADMINS | finflow user ids told when an org sync fails (comma-separated) |
| FINFLOW_WECOM_ORG_SYNC | `1`: WeCom is the source of truth for the org (nightly full sync, change_contact events) |
| FINFLOW_WECOM_SYNC_HOUR | hour of the nightly full sync, Asia/Shanghai (default 2) |

The Secret, Token and EncodingAESKey may be given sealed (`finflow secrets seal --for wecom`, opened with
FINFLOW_SECRET_KEY) or, as before, plain; a sealed one that does not open is a bad variable (ValueError).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from engine import crypto

PURPOSE = "wecom"  # what WeCom credentials are sealed for, configured or cached (engine.crypto)
DEFAULT_API_BASE = "https://qyapi.weixin.qq.com"
DEFAULT_OAUTH_BASE = "https://open.weixin.qq.com"


@dataclass(frozen=True)
class WeComConfig:
    corp_id: str
    agent_id: int
    secret: str
    token: str
    aes_key: str
    api_base: str = DEFAULT_API_BASE
    oauth_base: str = DEFAULT_OAUTH_BASE
    public_url: str = "http://127.0.0.1:8000"
    admins: tuple[str, ...] = ()
    org_sync: bool = False
    sync_hour: int = 2
    source: str = "finflow 审批"

    @classmethod
    def from_env(cls) -> WeComConfig | None:
        env = os.environ.get
        corp_id = env("FINFLOW_WECOM_CORP_ID", "").strip()
        if not corp_id:
            return None
        missing = [name for name in ("AGENT_ID", "SECRET", "TOKEN", "AES_KEY") if not env(f"FINFLOW_WECOM_{name}")]
        if missing:
            raise ValueError("FINFLOW_WECOM_CORP_ID is set but not " + ", ".join(f"FINFLOW_WECOM_{m}" for m in missing))
        try:
            agent_id = int(env("FINFLOW_WECOM_AGENT_ID", ""))
            sync_hour = int(env("FINFLOW_WECOM_SYNC_HOUR", "2"))
        except ValueError as exc:
            raise ValueError(f"FINFLOW_WECOM_AGENT_ID and FINFLOW_WECOM_SYNC_HOUR must be integers: {exc}") from exc
        opened = {name: crypto.setting(env(f"FINFLOW_WECOM_{name}", ""), PURPOSE, f"FINFLOW_WECOM_{name}") or ""
                  for name in ("SECRET", "TOKEN", "AES_KEY")}  # each plain or sealed; SettingError: a ValueError
        return cls(corp_id=corp_id, agent_id=agent_id, secret=opened["SECRET"], token=opened["TOKEN"],
                   aes_key=opened["AES_KEY"],
                   api_base=env("FINFLOW_WECOM_API_BASE", DEFAULT_API_BASE).rstrip("/"),
                   oauth_base=env("FINFLOW_WECOM_OAUTH_BASE", DEFAULT_OAUTH_BASE).rstrip("/"),
                   public_url=env("FINFLOW_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/"),
                   admins=tuple(a.strip() for a in env("FINFLOW_WECOM_ADMINS", "").split(",") if a.strip()),
                   org_sync=env("FINFLOW_WECOM_ORG_SYNC", "0").lower() in ("1", "true", "yes", "on"),
                   sync_hour=sync_hour, source=env("FINFLOW_WECOM_SOURCE", "finflow 审批"))

    def env(self) -> dict[str, str]:
        """The variables that configure this app (to hand to a child process, e.g. the demo)."""
        return {"FINFLOW_WECOM_CORP_ID": self.corp_id, "FINFLOW_WECOM_AGENT_ID": str(self.agent_id),
                "FINFLOW_WECOM_SECRET": self.secret, "FINFLOW_WECOM_TOKEN": self.token,
                "FINFLOW_WECOM_AES_KEY": self.aes_key, "FINFLOW_WECOM_API_BASE": self.api_base,
                "FINFLOW_WECOM_OAUTH_BASE": self.oauth_base, "FINFLOW_PUBLIC_URL": self.public_url,
                "FINFLOW_WECOM_ADMINS": ",".join(self.admins), "FINFLOW_WECOM_ORG_SYNC": "1" if self.org_sync else "0",
                "FINFLOW_WECOM_SYNC_HOUR": str(self.sync_hour), "FINFLOW_WECOM_SOURCE": self.source}


def configured() -> bool:
    """Whether a WeCom corp is configured (a half-done configuration counts as none here, and so does one
    whose sealed values do not open: crypto.SettingError is a ValueError)."""
    try:
        return WeComConfig.from_env() is not None
    except ValueError:
        return False
