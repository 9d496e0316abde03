"""The organisation: departments, users, roles and groups, and who may act on a task."""
