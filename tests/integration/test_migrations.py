"""`hms db upgrade` builds exactly the schema the models describe, on SQLite and on
PostgreSQL: a fresh database upgraded to head has no difference from the models."""

from __future__ import annotations

import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text

from hms.db import Base, import_all_models, make_engine, normalise_url
from hms.migrations import upgrade
from tests.conftest import POSTGRES_URL


@pytest.fixture
def fresh_url(tmp_path):
    yield from _fresh_database(tmp_path, "migrated")


@pytest.fixture
def models_url(tmp_path):
    yield from _fresh_database(tmp_path, "models")


def _fresh_database(tmp_path, label: str):
    if not POSTGRES_URL:
        yield f"sqlite:///{tmp_path / f'{label}.db'}"
        return
    name = f"hms_mig_{uuid.uuid4().hex[:8]}"
    admin = create_engine(normalise_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield normalise_url(POSTGRES_URL).rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_upgrade_to_head_matches_the_models(fresh_url):
    import_all_models()
    upgrade(fresh_url)
    engine = make_engine(fresh_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
            tables = set(conn.dialect.get_table_names(conn))
    finally:
        engine.dispose()
    assert diff == []
    assert {"patient", "process_instance", "work_item", "audit_log", "bill", "stock_batch"} <= tables


def test_upgrade_is_repeatable(fresh_url):
    upgrade(fresh_url)
    upgrade(fresh_url)  # already at head: nothing to do, no error


def _check_constraints(url: str) -> dict[str, set[tuple[str, str]]]:
    from sqlalchemy import inspect

    engine = make_engine(url)
    try:
        inspector = inspect(engine)
        return {t: {(c["name"], " ".join(str(c["sqltext"]).split())) for c in inspector.get_check_constraints(t)}
                for t in inspector.get_table_names() if t != "alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_builds_the_check_constraints_of_the_models(fresh_url, models_url):
    """Autogenerate does not compare CHECK constraints, so a changed list of values (a new
    role, payer kind or charge kind) must be migrated by hand; this finds one that was not:
    the checks of a migrated database equal those of a database made from the models."""
    import_all_models()
    upgrade(fresh_url)
    engine = make_engine(models_url)
    try:
        Base.metadata.create_all(engine)
    finally:
        engine.dispose()
    migrated, models = _check_constraints(fresh_url), _check_constraints(models_url)
    assert set(migrated) == set(models)
    differ = {t: (sorted(migrated[t] - models[t]), sorted(models[t] - migrated[t]))
              for t in models if migrated[t] != models[t]}
    assert differ == {}
