"""The `hms` command line, run in-process with click's CliRunner against the test database
(HMS_DATABASE_URL points at it; the schema comes from the `database` fixture)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, text

from hms.audit import AuditLog
from hms.auth.models import User
from hms.auth.passwords import verify_password
from hms.cli import main

PASSWORD = "kidney-bean-77"


@pytest.fixture
def hms(database, db_url):
    """hms("create-user", "--username", ...) -> click Result, with the test environment."""
    env = {"HMS_DATABASE_URL": db_url, "HMS_AUDIT_KEY": "test-audit-key", "HMS_ENV": "test"}

    def run(*args, input=None, **extra_env):
        return CliRunner().invoke(main, list(args), env={**env, **extra_env}, input=input)

    return run


def get_user(database, username) -> User | None:
    with database.transaction(readonly=True) as s:
        return s.execute(select(User).where(User.username == username)).scalar_one_or_none()


def count(database, model) -> int:
    with database.transaction(readonly=True) as s:
        return s.execute(select(func.count()).select_from(model)).scalar_one()


# --- create-user -----------------------------------------------------------------------

def test_create_user_with_password_option_can_log_in(hms, database, make_department, make_ward):
    make_department(code="GM", name="General Medicine")
    make_ward(code="MWM", name="Medical Ward Male")
    result = hms("create-user", "--username", "Zahid", "--full-name", "Zahid Hussain",
                 "--role", "nurse", "--role", "doctor", "--department", "GM", "--ward", "MWM",
                 "--password", PASSWORD)
    assert result.exit_code == 0, result.output
    user = get_user(database, "zahid")
    assert f"created user zahid (id {user.id})" in result.output
    assert verify_password(user.password_hash, PASSWORD)
    assert not verify_password(user.password_hash, "another-password")
    assert user.role_names == {"nurse", "doctor"}
    assert len(user.department_ids) == 1 and len(user.ward_ids) == 1
    assert user.is_demo is False


def test_created_user_logs_in_through_the_api(hms, app):
    assert hms("create-user", "--username", "zahid", "--full-name", "Zahid Hussain", "--role", "admin",
               "--password", PASSWORD).exit_code == 0
    resp = app.test_client().post("/api/v1/auth/login", json={"username": "zahid", "password": PASSWORD})
    assert resp.status_code == 200 and resp.get_json()["user"]["roles"] == ["admin"]


def test_create_user_prompts_for_the_password_twice(hms, database):
    result = hms("create-user", "--username", "zahid", "--full-name", "Zahid Hussain", "--role", "cashier",
                 input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output  # hidden input
    assert verify_password(get_user(database, "zahid").password_hash, PASSWORD)


def test_create_user_is_audited_as_the_cli(hms, database):
    hms("create-user", "--username", "zahid", "--full-name", "Zahid Hussain", "--role", "cashier",
        "--password", PASSWORD)
    with database.transaction(readonly=True) as s:
        row = s.execute(select(AuditLog).where(AuditLog.action == "user.create")).scalar_one()
    assert (row.actor_name, row.actor_id, row.detail["roles"]) == ("cli", None, ["cashier"])


def test_duplicate_username_exits_1_with_a_clear_message(hms, database):
    args = ("create-user", "--username", "zahid", "--full-name", "Zahid Hussain", "--role", "cashier",
            "--password", PASSWORD)
    assert hms(*args).exit_code == 0
    again = hms(*args)
    assert again.exit_code == 1
    assert "error: The username 'zahid' is taken." in again.output
    assert count(database, User) == 1


@pytest.mark.parametrize("extra, message", [
    (("--role", "cashier", "--password", "short"), "password: Use at least 8 characters."),
    (("--role", "surgeon", "--password", PASSWORD), "unknown role(s): surgeon"),
    (("--role", "nurse", "--department", "NOPE", "--password", PASSWORD), "unknown department code(s): NOPE"),
    (("--role", "nurse", "--ward", "W9", "--password", PASSWORD), "unknown ward code(s): W9"),
])
def test_create_user_refusals_exit_1_and_create_nothing(hms, database, extra, message):
    result = hms("create-user", "--username", "zahid", "--full-name", "Zahid Hussain", *extra)
    assert result.exit_code == 1
    assert message in result.output
    assert count(database, User) == 0
    assert count(database, AuditLog) == 0


def test_create_user_requires_a_role(hms):
    result = hms("create-user", "--username", "zahid", "--full-name", "Zahid Hussain", "--password", PASSWORD)
    assert result.exit_code == 2 and "--role" in result.output


# --- audit verify ----------------------------------------------------------------------

def test_audit_verify_ok_then_broken(hms, database):
    for name in ("amina", "bilal", "chand"):
        assert hms("create-user", "--username", name, "--full-name", name.title(), "--role", "nurse",
                   "--password", PASSWORD).exit_code == 0
    ok = hms("audit", "verify")
    assert ok.exit_code == 0 and "audit chain OK: 3 rows verified" in ok.output
    with database.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET actor_name = 'someone' WHERE seq = 2"))
    broken = hms("audit", "verify")
    assert broken.exit_code == 1
    assert "BROKEN at seq 2" in broken.output and "1 rows verified before it" in broken.output


# --- demo ------------------------------------------------------------------------------

def _table_counts(database) -> dict[str, int]:
    tables = ("department", "ward", "room", "bed", "app_user", "user_role", "user_department",
              "user_ward", "patient", "allergy", "audit_log")
    with database.engine.connect() as conn:
        return {t: conn.execute(text(f'SELECT count(*) FROM "{t}"')).scalar_one() for t in tables}


def test_demo_twice_is_idempotent(hms, database):
    first = hms("demo")
    assert first.exit_code == 0, first.output
    assert "departments: 6 created, 0 already present" in first.output
    assert "wards: 7 created (54 beds), 0 already present" in first.output
    assert "users: 13 created, 0 already present" in first.output
    assert "patients: 50 registered, 0 already present" in first.output
    assert "demo logins (password hms-demo):" in first.output
    assert "doctor" in first.output and "Dr. Ayesha Siddiqui" in first.output
    counts = _table_counts(database)
    assert (counts["department"], counts["ward"], counts["bed"], counts["app_user"], counts["patient"]) == \
        (6, 7, 54, 13, 50)

    second = hms("demo")
    assert second.exit_code == 0, second.output
    assert "departments: 0 created, 6 already present" in second.output
    assert "wards: 0 created, 7 already present" in second.output
    assert "users: 0 created, 13 already present" in second.output
    assert "patients: 0 registered, 50 already present" in second.output
    assert _table_counts(database) == counts
    assert hms("audit", "verify").exit_code == 0


def test_demo_is_refused_in_production(hms, database):
    result = hms("demo", HMS_ENV="production", HMS_SECRET_KEY="p" * 40)
    assert result.exit_code == 1 and "not for HMS_ENV=production" in result.output
    assert count(database, User) == 0


# --- configuration and schema ----------------------------------------------------------

def test_bad_configuration_exits_2_naming_the_variable(hms):
    result = hms("audit", "verify", HMS_PORT="eighty")
    assert result.exit_code == 2
    assert "configuration error: HMS_PORT must be a whole number" in result.output


def test_missing_schema_advises_db_upgrade(hms, tmp_path):
    result = hms("audit", "verify", HMS_DATABASE_URL=f"sqlite:///{tmp_path / 'empty.db'}")
    assert result.exit_code == 1
    assert "run `hms db upgrade` first" in result.output


def test_db_upgrade_runs_on_a_fresh_database(hms, tmp_path):
    url = f"sqlite:///{tmp_path / 'instance' / 'fresh.db'}"
    result = hms("db", "upgrade", HMS_DATABASE_URL=url)
    assert result.exit_code == 0, result.output
    assert "database at head" in result.output
    assert (tmp_path / "instance" / "fresh.db").exists()


# --- serve and the workflow commands ---------------------------------------------------

@pytest.fixture
def fake_server(monkeypatch):
    """Flask.run records its arguments instead of serving, after one tick of the timer
    loop that serve started (so the tick runs for real against the test database)."""
    calls = {"run": [], "ticker": []}

    def run(app, **kwargs):
        calls["run"].append((app.name, kwargs))
        for tick, _every in calls["ticker"]:
            tick()

    monkeypatch.setattr("flask.Flask.run", run)
    monkeypatch.setattr("hms.workflow.cli.start_ticker", lambda fn, every: calls["ticker"].append((fn, every)))
    return calls


def test_serve_starts_the_app_and_the_timer_ticks(hms, fake_server):
    result = hms("serve", HMS_HOST="0.0.0.0", HMS_PORT="8123", HMS_TIMER_POLL_SECONDS="7")
    assert result.exit_code == 0, result.output
    assert "HMS on http://0.0.0.0:8123/login" in result.output
    assert "demo logins" not in result.output  # no demo accounts in this database
    [(name, kwargs)] = fake_server["run"]
    assert (name, kwargs["host"], kwargs["port"], kwargs["debug"]) == ("hms", "0.0.0.0", 8123, False)
    assert [every for _fn, every in fake_server["ticker"]] == [7]
    assert "timers and job retries: every 7s in this process" in result.output


def test_serve_lists_demo_logins_when_the_demo_is_loaded(hms, fake_server):
    assert hms("demo").exit_code == 0
    result = hms("serve")
    assert result.exit_code == 0, result.output
    assert "demo logins (password hms-demo):" in result.output and "housekeeping" in result.output


def test_with_redis_the_worker_fires_timers_not_the_server(config, database, monkeypatch, capsys):
    from hms.cli import _start_timer_ticks

    started = []
    monkeypatch.setattr("hms.workflow.cli.start_ticker", lambda fn, every: started.append(every))
    _start_timer_ticks(config.with_overrides(redis_url="redis://localhost:6379/0"), database)
    assert started == []
    assert "run `hms worker`" in capsys.readouterr().out


def test_workflow_commands_are_part_of_hms(hms):
    listing = hms("--help")
    assert listing.exit_code == 0
    for name in ("audit", "create-user", "db", "demo", "serve", "worker", "workflows"):
        assert f"  {name} " in listing.output
    workflows = hms("workflows", "--help")
    assert workflows.exit_code == 0 and "rebuild-queues" in workflows.output
