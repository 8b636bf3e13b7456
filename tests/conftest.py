"""Shared fixtures: a real database (SQLite file, or PostgreSQL from HMS_TEST_DATABASE_URL),
the app, logged-in clients per role, and small factories.

The schema is created once per session; every test starts from empty tables.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from sqlalchemy import event, text
from sqlalchemy.engine import Engine

from hms.audit import Actor
from hms.config import Config
from hms.db import Base, Database, import_all_models

TEST_PASSWORD = "correct-horse-42"
POSTGRES_URL = os.environ.get("HMS_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("HMS_TEST_REDIS_URL")


@pytest.fixture(autouse=True, scope="session")
def _fast_password_hashing():
    # Production parameters cost ~50 ms a hash; tests only need the same code path.
    import hms.auth.passwords as pw

    fast = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    old, old_dummy = pw._hasher, pw._DUMMY_HASH
    pw._hasher, pw._DUMMY_HASH = fast, fast.hash("hms-timing-equaliser")
    yield
    pw._hasher, pw._DUMMY_HASH = old, old_dummy


@pytest.fixture(scope="session")
def db_url(tmp_path_factory) -> str:
    if POSTGRES_URL:
        return POSTGRES_URL
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'hms-test.db'}"


@pytest.fixture(scope="session")
def config(db_url) -> Config:
    return Config.from_env(environ={}, env="test", database_url=db_url, secret_key="test-secret-key",
                           audit_key="test-audit-key")


@pytest.fixture(scope="session")
def database(config) -> Database:
    import_all_models()
    db = Database(config)
    Base.metadata.drop_all(db.engine)
    Base.metadata.create_all(db.engine)
    yield db
    db.dispose()


# Tables a test wrote to, from the INSERT statements any engine sent. On PostgreSQL a TRUNCATE
# costs about the same per table whether it holds rows or not, so emptying only these keeps
# the per-test cleanup small as the schema grows.
_WRITTEN: set[str] = set()
_INSERT_INTO = re.compile(r'^\s*INSERT\s+INTO\s+"?([A-Za-z_][A-Za-z0-9_]*)"?', re.IGNORECASE)


@event.listens_for(Engine, "before_cursor_execute")
def _note_written_table(conn, cursor, statement, parameters, context, executemany):
    match = _INSERT_INTO.match(statement)
    if match:
        _WRITTEN.add(match.group(1))


def _empty_all_tables(db: Database) -> None:
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with db.engine.begin() as conn:
        if db.dialect == "postgresql":
            # DELETE of the few small tables a test wrote is far cheaper than a TRUNCATE of
            # all of them; children first (sorted_tables order), then their ids restart.
            written = [t for t in tables if t in _WRITTEN]
            for t in written:
                conn.execute(text(f'DELETE FROM "{t}"'))
            serial = [t for t in written if "id" in Base.metadata.tables[t].c
                      and Base.metadata.tables[t].c.id.primary_key and Base.metadata.tables[t].c.id.autoincrement]
            if serial:
                conn.execute(text("SELECT " + ", ".join(
                    f"setval(pg_get_serial_sequence('\"{t}\"', 'id'), 1, false)" for t in serial)))
            _WRITTEN.clear()
        else:
            for t in tables:
                conn.execute(text(f'DELETE FROM "{t}"'))
            if conn.execute(text("SELECT name FROM sqlite_master WHERE name='sqlite_sequence'")).first():
                conn.execute(text("DELETE FROM sqlite_sequence"))


@pytest.fixture(autouse=True)
def _clean_tables(request):
    # Parsed specs are cached by (key, version) for the process, and every test starts from
    # empty tables: one test's "version 2" must never be served to another.
    from hms.workflow import specs

    specs.CACHE.clear()
    yield
    specs.CACHE.clear()
    if "database" in request.fixturenames:
        _empty_all_tables(request.getfixturevalue("database"))


@pytest.fixture
def app(config, database):
    """The app without publishing workflows/ (each test starts from empty tables; tests of the
    shipped pathways ask for `shipped_pathways`)."""
    from hms.app import create_app

    return create_app(config, database, sync_pathways=False)


@pytest.fixture
def shipped_pathways(app, config, database):
    """Publish the pathways in workflows/ as a fresh install does at start-up."""
    from hms.app import prepare_workflows

    prepare_workflows(config, database, sync=True)
    from hms.workflow import specs

    with database.transaction(readonly=True) as s:
        return {v.key: v.version for v in specs.list_versions(s)}


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def system_actor() -> Actor:
    return Actor.system("test")


@pytest.fixture
def session(database):
    """A session for direct service calls; commit explicitly when the test needs it."""
    s = database.session()
    yield s
    s.rollback()
    s.close()


@pytest.fixture
def make_department(database):
    from hms.org.models import Department

    def make(code="GM", name="General Medicine", kind="clinical"):
        with database.transaction() as s:
            dep = Department(code=code, name=name, kind=kind)
            s.add(dep)
            s.flush()
            return dep.id

    return make


@pytest.fixture
def make_ward(database, make_department):
    from wards.models import Bed, Ward

    def make(code="MW1", name="Medical Ward 1", department_id=None, beds=4):
        department_id = department_id or make_department(code=f"D{code}", name=f"Dept {code}")
        with database.transaction() as s:
            ward = Ward(code=code, name=name, department_id=department_id)
            s.add(ward)
            s.flush()
            for i in range(1, beds + 1):
                s.add(Bed(ward_id=ward.id, label=f"{code}-{i:02d}"))
            return ward.id

    return make


@pytest.fixture
def make_user(database):
    from hms.auth.services import create_user

    def make(username, *roles, password=TEST_PASSWORD, department_ids=(), ward_ids=(), full_name=None):
        with database.transaction() as s:
            user = create_user(s, Actor.system("test"), username=username,
                               full_name=full_name or username.replace("_", " ").title(),
                               password=password, roles=roles, department_ids=department_ids,
                               ward_ids=ward_ids)
            return user.id

    return make


def login(client, username, password=TEST_PASSWORD):
    resp = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert resp.status_code == 200, resp.get_json()
    return resp


@pytest.fixture
def as_role(app, make_user):
    """as_role("doctor") -> a test client logged in as a fresh user with that role."""
    made: dict[str, object] = {}

    def make(*roles, **scopes):
        username = "u_" + "_".join(roles) + f"_{len(made)}"
        make_user(username, *roles, **scopes)
        c = app.test_client()
        login(c, username)
        made[username] = c
        return c

    return make


def pytest_collection_modifyitems(config, items):
    """Tests marked postgres/redis skip with a reason when their URL is absent; .ci/run
    fails the build if any of them were skipped."""
    for item in items:
        if item.get_closest_marker("postgres") and not POSTGRES_URL:
            item.add_marker(pytest.mark.skip(reason="needs HMS_TEST_DATABASE_URL (PostgreSQL)"))
        if item.get_closest_marker("redis") and not REDIS_URL:
            item.add_marker(pytest.mark.skip(reason="needs HMS_TEST_REDIS_URL (Redis)"))
