"""The tamper-evident audit trail over the instance history.

* `chain`: every history event carries the SHA-256 of its predecessor's hash and its own content, so
  editing or deleting a row breaks the instance's chain (the head is kept on the instance).
* `anchors`: one digest per day (Asia/Shanghai) over every event hash of that day, chained day to day,
  so rewriting an instance's whole chain still changes a digest that may be copied off-site.
* `verify`: recompute all of it and report the first broken link of each instance and each bad day.
* `archive`: move the history of long-finished instances out of the live table, chains intact.
"""
