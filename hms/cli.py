"""The `hms` command group: db upgrade, demo, create-user, audit verify, serve, and the
workflow commands (`hms workflows ...`, `hms worker`) that live in hms.workflow.cli.

Every command reads its configuration from the HMS_* variables, does its work in one
transaction, and exits 0 when it succeeded, 1 when it refused (the reason on stderr) and
2 when the configuration is invalid.
"""

from __future__ import annotations

import importlib
from contextlib import contextmanager
from typing import Iterator

import click
from sqlalchemy.exc import OperationalError, ProgrammingError

from hms.config import Config, ConfigError


class Refused(click.ClickException):
    """The command cannot do what was asked; exit status 1."""

    exit_code = 1

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class ConfigProblem(click.ClickException):
    """An HMS_* variable is missing or invalid; exit status 2."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"configuration error: {self.format_message()}", err=True)


def _config() -> Config:
    try:
        return Config.from_env()
    except ConfigError as err:
        raise ConfigProblem(str(err)) from None


@contextmanager
def _database() -> Iterator:
    """The Database for this command; its connections are closed when the command ends."""
    from hms.db import Database, import_all_models

    import_all_models()
    database = Database(_config())
    try:
        with _schema_required():
            yield database
    finally:
        database.dispose()


def _is_missing_table(err: Exception) -> bool:
    text = str(getattr(err, "orig", err)).lower()
    return "no such table" in text or ("relation" in text and "does not exist" in text)


@contextmanager
def _schema_required() -> Iterator[None]:
    """Turn "no such table" into advice, since it means the migrations have not run."""
    try:
        yield
    except (OperationalError, ProgrammingError) as err:
        if _is_missing_table(err):
            raise Refused("the database has no HMS tables yet; run `hms db upgrade` first") from None
        raise


def _describe(err) -> str:
    """An HmsError as one line: its message and the fields it names."""
    fields = "; ".join(f"{name}: {', '.join(problems) if isinstance(problems, list) else problems}"
                       for name, problems in (err.fields or {}).items())
    return f"{err.message} ({fields})" if fields else err.message


class HmsGroup(click.Group):
    """The `hms` group. Commands that other packages own are imported only when used, so
    `hms demo` or `hms audit verify` never load the workflow engine."""

    LAZY = {
        "workflows": "hms.workflow.cli:workflows",
        "worker": "hms.workflow.cli:worker",
    }

    def list_commands(self, ctx) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.LAZY})

    def get_command(self, ctx, name):
        if name in self.LAZY:
            module, attr = self.LAZY[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


@click.group(cls=HmsGroup)
def main():
    """HMS command line."""


# --- database --------------------------------------------------------------------------

@main.group()
def db():
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision):
    """Apply alembic migrations (creates the SQLite file under instance/ when needed)."""
    from hms.migrations import upgrade

    upgrade(_config().database_url, revision)
    click.echo(f"database at {revision}")


# --- demo ------------------------------------------------------------------------------

@main.command("demo")
def demo():
    """Load demo data (idempotent): departments, wards, one user per role, 50 patients."""
    from hms.demo import load_demo, login_table

    if _config().is_production:
        raise Refused("demo data (with its shared password) is not for HMS_ENV=production")
    with _database() as database, database.transaction() as session:
        summary = load_demo(session)
    for line in [*summary, *login_table()]:
        click.echo(line)


# --- users -----------------------------------------------------------------------------

def _ids_for_codes(session, model, codes: tuple[str, ...], what: str) -> list[int]:
    from sqlalchemy import select

    found = {code: id_ for code, id_ in session.execute(select(model.code, model.id).where(model.code.in_(codes)))}
    unknown = sorted(set(codes) - set(found))
    if unknown:
        raise Refused(f"unknown {what} code(s): {', '.join(unknown)}")
    return [found[c] for c in codes]


@main.command("create-user")
@click.option("--username", required=True)
@click.option("--full-name", required=True)
@click.option("--role", "roles", multiple=True, required=True, help="Repeat for several roles.")
@click.option("--department", "departments", multiple=True, help="Department code, e.g. GM; repeatable.")
@click.option("--ward", "wards", multiple=True, help="Ward code, e.g. MWM; repeatable.")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
              help="Asked for when not given (recommended: it then stays out of the shell history).")
def create_user(username, full_name, roles, departments, wards, password):
    """Create a user account."""
    from hms.audit import Actor
    from hms.auth.services import create_user as create
    from hms.errors import HmsError
    from hms.org.models import Department
    from wards.models import Ward

    with _database() as database:
        try:
            with database.transaction() as session:
                user = create(session, Actor.system("cli"), username=username, full_name=full_name,
                              password=password, roles=roles,
                              department_ids=_ids_for_codes(session, Department, departments, "department"),
                              ward_ids=_ids_for_codes(session, Ward, wards, "ward"))
                message = f"created user {user.username} (id {user.id})"
        except HmsError as err:
            raise Refused(_describe(err)) from None
    click.echo(message)


# --- audit -----------------------------------------------------------------------------

@main.group()
def audit():
    """Audit trail."""


@audit.command("verify")
def audit_verify():
    """Verify the audit hash chain; exit 1 and name the first bad row if it was tampered with."""
    from hms.audit import verify

    with _database() as database, database.transaction(readonly=True) as session:
        result = verify(session)
    if not result.ok:
        raise Refused(result.summary)
    click.echo(result.summary)


# --- server ----------------------------------------------------------------------------

def _demo_logins_present(database) -> bool:
    from sqlalchemy import select

    from hms.auth.models import User

    try:
        with database.transaction(readonly=True) as session:
            return session.execute(select(User.id).where(User.is_demo.is_(True)).limit(1)).first() is not None
    except (OperationalError, ProgrammingError):
        return False  # no schema yet; the app will say so on the first request


def _start_timer_ticks(config, database) -> None:
    """Without Redis there is no `hms worker`, so the development server itself fires due
    workflow timers, retries failed jobs and runs periodic sweeps every HMS_TIMER_POLL_SECONDS."""
    if config.redis_url:
        click.echo("timers and jobs: run `hms worker` beside the server (HMS_REDIS_URL is set)")
        return
    from hms.workflow.cli import background_tick, start_ticker

    start_ticker(lambda: background_tick(database), config.timer_poll_seconds)
    click.echo(f"timers and job retries: every {config.timer_poll_seconds}s in this process")


@main.command("serve")
def serve():
    """Run the development server on HMS_HOST:HMS_PORT (production: gunicorn 'hms.wsgi:app')."""
    from hms.app import create_app
    from hms.db import Database, import_all_models
    from hms.demo import login_table

    config = _config()
    import_all_models()
    database = Database(config)
    try:
        app = create_app(config, database)
        click.echo(f"HMS on http://{config.host}:{config.port}/login  (Ctrl+C stops)")
        if _demo_logins_present(database):
            for line in login_table():
                click.echo(line)
        _start_timer_ticks(config, database)
        app.run(host=config.host, port=config.port, debug=False, use_reloader=False, threaded=True)
    finally:
        database.dispose()


def register_cli(app) -> None:
    """Offer the same commands under Flask's CLI (`flask --app hms.app demo` ...).

    They read HMS_* themselves, exactly as under `hms`; the `hms` group stays the main entry.
    """
    for command in (db, demo, create_user, audit):
        app.cli.add_command(command)


def run() -> None:
    """Entry point of the `hms` console script."""
    main(prog_name="hms")
