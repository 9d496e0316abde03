"""Test set-up: a real database (SQLite file, or PostgreSQL with FINFLOW_TEST_DB=postgres), migrated with
Alembic once per run and emptied before each test, with the demo org and the shipped processes loaded."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_TMP = Path(tempfile.mkdtemp(prefix="finflow-test-"))
if os.environ.get("FINFLOW_TEST_DB", "sqlite") == "postgres":
    DATABASE_URL = os.environ.get("FINFLOW_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
else:
    DATABASE_URL = f"sqlite:///{_TMP / 'test.db'}"
os.environ["DATABASE_URL"] = DATABASE_URL
os.environ["FINFLOW_DATA_DIR"] = str(_TMP)

from sqlalchemy import text  # noqa: E402

from api import create_app  # noqa: E402
from engine import clock  # noqa: E402
from engine.db import Base, get_engine, transaction  # noqa: E402
from engine.history import Actor  # noqa: E402
from engine.migrate import upgrade  # noqa: E402
from engine.org.directory import load_demo_org  # noqa: E402
from engine.runner import warm  # noqa: E402
from engine.services.auth import issue_token  # noqa: E402
from engine.services.deployments import deploy_directory  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROCESSES = ROOT / "processes"


@pytest.fixture(scope="session", autouse=True)
def schema():
    """Start from an empty database and build it with the migrations, as `finflow init` does."""
    engine = get_engine(DATABASE_URL)
    Base.metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    upgrade(DATABASE_URL)
    yield engine


@pytest.fixture(autouse=True)
def db(schema):
    """Every test starts with the demo company and the three processes deployed, nothing else, at the
    real time (a test that moved the clock does not move the next one's)."""
    clock.reset()
    warm.clear()  # workflows kept between commands belong to the previous test's instances
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with schema.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                conn.execute(text(f"DELETE FROM {table}"))
    with transaction() as session:
        load_demo_org(session)
        deploy_directory(session, PROCESSES, Actor(None, "cli"))
    return DATABASE_URL


@pytest.fixture
def app():
    return create_app({"TESTING": True})


class ApiClient:
    """The Flask test client speaking as one user."""

    def __init__(self, client, token: str):
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}

    def _call(self, method, path, headers=None, **kwargs):
        return getattr(self.client, method)(path, headers={**self.headers, **(headers or {})}, **kwargs)

    def get(self, path, **kwargs):
        return self._call("get", path, **kwargs)

    def post(self, path, **kwargs):
        return self._call("post", path, **kwargs)

    def delete(self, path, **kwargs):
        return self._call("delete", path, **kwargs)


@pytest.fixture
def as_user(app):
    client = app.test_client()
    cache: dict[str, ApiClient] = {}

    def for_user(user_id: str) -> ApiClient:
        if user_id not in cache:
            with transaction() as session:
                cache[user_id] = ApiClient(client, issue_token(session, user_id, "test"))
        return cache[user_id]

    return for_user
