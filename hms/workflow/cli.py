"""`hms workflows list | validate | publish | tick | retry | rebuild-queues` and `hms worker`."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import click

from hms.config import Config


def _database():
    from hms.app import prepare_workflows
    from hms.db import Database, import_all_models

    import_all_models()
    config = Config.from_env()
    db = Database(config)
    prepare_workflows(config, db)
    return config, db


@click.group("workflows")
def workflows():
    """BPMN pathways and their instances."""


@workflows.command("list")
def list_cmd():
    """Published pathways with their versions and running instances."""
    from sqlalchemy import func, select

    from hms.workflow import specs
    from hms.workflow.models import ProcessInstance

    _, db = _database()
    with db.transaction(readonly=True) as s:
        counts = dict(s.execute(select(ProcessInstance.pathway_key, func.count())
                                .where(ProcessInstance.status.in_(("running", "waiting", "error")))
                                .group_by(ProcessInstance.pathway_key)).all())
        rows = specs.list_versions(s)
        if not rows:
            click.echo("no pathways published")
        for v in rows:
            click.echo(f"{v.key:<24} v{v.version:<3} {v.published_at:%Y-%m-%d %H:%M} {v.source:<8} "
                       f"{v.checksum[:12]}  active instances: {counts.get(v.key, 0)}")


@workflows.command("validate")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False))
def validate_cmd(files):
    """Lint BPMN files (default: every file in workflows/); exit 1 on any problem."""
    from hms.workflow import lint, operations
    from hms.app import OPERATION_MODULES
    from hms.forms import FormRegistry

    config = Config.from_env()
    operations.register_domain_operations(OPERATION_MODULES)
    paths = [Path(f) for f in files] or sorted(Path(config.workflows_dir).glob("*.bpmn"))
    all_xml = {p.stem: p.read_text(encoding="utf-8") for p in sorted(Path(config.workflows_dir).glob("*.bpmn"))}
    all_xml.update({p.stem: p.read_text(encoding="utf-8") for p in paths})
    forms = FormRegistry.from_directory(config.forms_dir)
    problems = 0
    for path in paths:
        found = lint.lint_xml(all_xml[path.stem], path.stem, forms=forms, callee_xml=all_xml, filename=str(path))
        for p in found:
            click.echo(str(p))
        problems += len(found)
    click.echo(f"{len(paths)} file(s) checked, {problems} problem(s)")
    sys.exit(1 if problems else 0)


@workflows.command("publish")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--note", default=None, help="why this version (shown in the version list)")
def publish_cmd(file, note):
    """Publish a BPMN file as the next version of its pathway (key = file stem)."""
    from hms.audit import Actor
    from hms.errors import HmsError
    from hms.workflow import specs

    _, db = _database()
    path = Path(file)
    try:
        with db.transaction() as s:
            row = specs.publish(s, Actor.system("cli"), path.stem, path.read_text(encoding="utf-8"),
                                note=note, source="cli")
            click.echo(f"published {row.key} v{row.version} ({row.checksum[:12]})")
    except HmsError as err:
        click.echo(f"refused: {err.message}", err=True)
        for problem in (err.fields or {}).get("problems", []):
            click.echo(f"  {problem}", err=True)
        sys.exit(1)


@workflows.command("tick")
def tick_cmd():
    """Fire every due timer once."""
    from hms.workflow import timers

    _, db = _database()
    result = timers.tick(db)
    click.echo(f"due instances: {result['due']}, fired: {result['fired']}, faults: {result['faults']}")


@workflows.command("retry")
@click.argument("instance_id", type=int)
def retry_cmd(instance_id):
    """Retry an instance stopped on an error (replays the failed action)."""
    from hms.audit import Actor
    from hms.errors import HmsError
    from hms.workflow import engine

    _, db = _database()
    try:
        with db.transaction() as s:
            result = engine.retry(s, Actor.system("cli"), instance_id)
    except HmsError as err:
        click.echo(f"refused: {err.message}", err=True)
        sys.exit(1)
    if not result.ok:
        click.echo(f"still failing: {result.fault}", err=True)
        sys.exit(1)
    click.echo(f"instance {instance_id} is {result.instance.status}")


@workflows.command("rebuild-queues")
def rebuild_queues_cmd():
    """Rebuild the work-item projection from the stored instances."""
    from hms.workflow import rebuild

    _, db = _database()
    counts = rebuild.rebuild_queues(db)
    click.echo(f"instances: {counts['instances']}, open work items: {counts['open_items']}, "
               f"closed stale items: {counts['closed']}")


@click.command("worker")
@click.option("--burst", is_flag=True, help="process what is queued, then exit")
def worker(burst):
    """Run an RQ worker (needs HMS_REDIS_URL) that also fires due timers regularly."""
    from hms import jobs
    from hms.workflow import timers

    config, db = _database()
    jobs.init(config, db)
    tick_once = lambda: background_tick(db)  # noqa: E731

    if not config.redis_url:
        click.echo("HMS_REDIS_URL is not set: firing timers and retrying failed jobs every "
                   f"{config.timer_poll_seconds}s (jobs run inline in the web process).")
        while True:
            tick_once()
            if burst:
                return
            time.sleep(config.timer_poll_seconds)
    if burst:
        tick_once()
    else:
        start_ticker(tick_once, config.timer_poll_seconds)
    jobs.work(config, burst=burst)


def background_tick(db) -> None:
    """One round of background work: due timers, failed jobs whose backoff passed, and the
    periodic sweeps (e.g. tomorrow's follow-up reminders)."""
    from hms import jobs
    from hms.workflow import timers

    timers.tick(db)
    jobs.retry_failed(db)
    jobs.run_periodic(db)


def start_ticker(fn, every_seconds: int) -> threading.Thread:
    """Run `fn` every `every_seconds` in a daemon thread (timers beside the RQ worker,
    or inside the development server when there is no Redis)."""
    import logging

    def loop():
        while True:
            try:
                fn()
            except Exception:  # keep ticking: one bad tick must not stop all timers
                logging.getLogger("hms.timers").exception("timer tick failed")
            time.sleep(every_seconds)

    thread = threading.Thread(target=loop, name="hms-ticker", daemon=True)
    thread.start()
    return thread
