"""Alembic environment: HMS models' metadata, batch mode on SQLite."""

from alembic import context

from hms.db import Base, import_all_models, make_engine

import_all_models()
config = context.config
target_metadata = Base.metadata


def render_item(type_, obj, autogen_context):
    """Custom column types (hms.db.UTCDateTime, lab's Dec ...) need their module imported
    in the generated migration; alembic renders them as module.Class(...)."""
    if type_ == "type" and not type(obj).__module__.startswith("sqlalchemy"):
        autogen_context.imports.add(f"import {type(obj).__module__}")
    return False


def run_migrations_online() -> None:
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
            render_item=render_item,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
