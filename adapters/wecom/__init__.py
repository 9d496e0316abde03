"""WeCom (企业微信): every user task becomes an interactive card, a click completes it, the org and the
approver page's login come from WeCom.

Modules, outside in:
* config.py — the app finflow speaks as (env); no corp id, no adapter.
* crypto.py — the callback encryption (WXBizMsgCrypt); client.py — the server API with its shared token.
* cards.py / deliveries — engine events → cards, card updates and messages (an external subscription).
* callback.py — /wecom/callback: verify, decrypt, de-duplicate, acknowledge, then apply on the queue;
  a click becomes engine.services.tasks.complete_task with channel "wecom".
* oauth.py — the approver page's login inside WeCom; sync.py — departments and members into the org.
* simulator/ — a WeCom on 127.0.0.1 for the demo and the tests.
"""
