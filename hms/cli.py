"""The `hms` command group: db upgrade, demo, create-user, audit verify, serve."""

from __future__ import annotations

import sys

import click

from hms.config import Config, ConfigError


def _database():
    from hms.db import Database, import_all_models

    import_all_models()
    return Database(Config.from_env())


@click.group()
def main():
    """HMS command line."""


@main.group()
def db():
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision):
    """Apply alembic migrations (creates the SQLite file under instance/ when needed)."""
    from hms.migrations import upgrade

    config = Config.from_env()
    upgrade(config.database_url, revision)
    click.echo(f"database at {revision}")


@main.command("demo")
def demo():
    """Load demo data (idempotent): users for every role, departments, wards, patients."""
    from hms.demo import load_demo

    database = _database()
    with database.transaction() as session:
        summary = load_demo(session)
    for line in summary:
        click.echo(line)


@main.command("create-user")
@click.option("--username", required=True)
@click.option("--full-name", required=True)
@click.option("--role", "roles", multiple=True, required=True, help="repeat for several roles")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
def create_user(username, full_name, roles, password):
    """Create a user account."""
    from hms.audit import Actor
    from hms.auth.services import create_user as create
    from hms.errors import HmsError

    database = _database()
    try:
        with database.transaction() as session:
            user = create(session, Actor.system("cli"), username=username, full_name=full_name,
                          password=password, roles=roles)
            click.echo(f"created user {user.username} (id {user.id})")
    except HmsError as err:
        click.echo(f"error: {err.message} {err.fields or ''}", err=True)
        sys.exit(1)


@main.group()
def audit():
    """Audit trail."""


@audit.command("verify")
def audit_verify():
    """Verify the audit hash chain; exit 1 and name the first bad row if it was tampered with."""
    from hms.audit import verify

    database = _database()
    with database.transaction(readonly=True) as session:
        result = verify(session)
    if result.ok:
        click.echo(f"audit chain OK: {result.rows_checked} rows verified")
        return
    click.echo(f"audit chain BROKEN at seq {result.first_bad_seq} (row id {result.first_bad_id}): "
               f"{result.problem}; {result.rows_checked} rows verified before it", err=True)
    sys.exit(1)


@main.command("serve")
def serve():
    """Run the development server on HMS_HOST:HMS_PORT (production: gunicorn 'hms.wsgi:app')."""
    from hms.app import create_app

    config = Config.from_env()
    app = create_app(config)
    click.echo(f"HMS on http://{config.host}:{config.port}/login  (Ctrl+C stops)")
    click.echo("demo logins (password hms-demo): admin reception nurse ward_nurse doctor lab pathologist "
               "pharmacist cashier finance head_medicine housekeeping")
    app.run(host=config.host, port=config.port, debug=False, use_reloader=False, threaded=True)


def register_cli(app) -> None:
    """Hook for Flask's own CLI (flask --app hms.app ...); the `hms` group is the main entry."""


def run() -> None:
    try:
        main()
    except ConfigError as err:
        click.echo(f"configuration error: {err}", err=True)
        sys.exit(2)
