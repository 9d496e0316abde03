"""OA (泛微 e-cology E9, and siblings): every instance has a twin OA request whose current node follows
finflow's; a decision taken in OA completes the finflow task, and one taken in finflow is submitted to OA,
each exactly once.

Modules, outside in:
* config.py — the OA finflow speaks to (env); no base URL, no adapter.
* system.py — the small interface an OA client implements; weaver.py — E9's REST protocol (RSA token auth).
* mapping.py — processes/oa/<process>.oa.json: workflow, fields, detail tables, BPMN user task → OA node.
* sync.py — engine events → OA calls: an external subscription, one ordered stream per instance.
* callback.py — /oa/callback (HMAC over timestamp and body); inbound.py — an OA decision becomes
  engine.services.tasks.complete_task with channel "oa"; poller.py — reads open requests back from OA so a
  missed callback is caught.
* reconcile.py — every open instance against its twin; users.py — finflow user ↔ OA user.
* simulator/ — an E9 on 127.0.0.1 for the demo and the tests.
"""

from __future__ import annotations


def load() -> None:
    """Subscribe the OA sync and hook the poller, the stale-decision re-run and the nightly reconciliation
    into the sweep of every process that loads adapters, so no single process is special."""
    from adapters.oa import sync
    from engine import events

    events.subscribe(sync.SUBSCRIPTION, sync.EVENT_TYPES, "channels", sync.connect, targets=sync.targets,
                     external=True, on_dead=sync.on_dead)
    from adapters.oa import poller

    poller.register()
