"""Application services: the one command path every channel (REST, WeCom, OA, timers) goes through.

Each function takes the caller's open session and an `Actor`; the caller's transaction makes the command
atomic (see `engine.db.transaction`).
"""
