"""WeCom (企业微信): every user task becomes an interactive card, a click completes it, the org and the
approver page's login come from WeCom.

Modules, outside in:
* config.py — the app finflow speaks as (env); no corp id, no adapter.
* crypto.py — the callback encryption (WXBizMsgCrypt); client.py — the server API with its shared token.
* cards.py (what a card says) and deliveries.py (engine events → cards, card updates and messages: an
  external subscription, one ordered stream per instance).
* callback.py — /wecom/callback: verify, decrypt, de-duplicate, acknowledge, then apply on the queue;
  inbound.py turns a click into engine.services.tasks.complete_task with channel "wecom".
* oauth.py — the approver page's login inside WeCom; sync.py — departments and members into the org.
* simulator/ — a WeCom on 127.0.0.1 for the demo and the tests.
"""

from __future__ import annotations


def load() -> None:
    """Subscribe the card sender and hook the callback re-queue and the nightly org sync into the sweep of
    every process that loads adapters (rq workers included), so no single process is special."""
    from adapters.wecom import callback, deliveries, sync
    from engine import events

    events.subscribe(deliveries.SUBSCRIPTION, deliveries.EVENT_TYPES, "channels", deliveries.connect,
                     targets=deliveries.targets, external=True)
    callback.register()
    sync.register()
