"""A scratch HMS database with the anchor pathway published and a nurse to do the work."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from benchmarks.common import ROLE_LANE, anchor_xml
from hms.audit import Actor
from hms.config import Config
from hms.db import Base, Database, import_all_models

BENCH_PASSWORD = "bench-password-1"


@dataclass
class BenchEnv:
    config: Config
    db: Database
    actor: Actor


def make_env(url: str, extra_pathways: dict[str, str] | None = None) -> BenchEnv:
    from hms.auth.models import User
    from hms.auth.services import actor_for, create_user
    from hms.workflow import lint, specs

    import_all_models()
    config = Config.from_env(environ={}, env="development", database_url=url,
                             secret_key="bench-secret-key-bench-secret-key", audit_key="bench")
    db = Database(config)
    Base.metadata.drop_all(db.engine)
    Base.metadata.create_all(db.engine)
    lint.register(config.forms_dir)
    with db.transaction() as s:
        specs.publish(s, Actor.system("bench"), "anchor_pathway", anchor_xml(), note="benchmark", source="cli")
        for key, xml in (extra_pathways or {}).items():
            specs.publish(s, Actor.system("bench"), key, xml, note="benchmark", source="cli")
        create_user(s, Actor.system("bench"), username="bench_nurse", full_name="Bench Nurse",
                    password=BENCH_PASSWORD, roles=[ROLE_LANE.lower()])
    with db.transaction(readonly=True) as s:
        user = s.execute(select(User).where(User.username == "bench_nurse")).scalar_one()
        actor = actor_for(user)
    return BenchEnv(config, db, actor)
