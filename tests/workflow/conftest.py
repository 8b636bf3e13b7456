"""Workflow fixtures: fixture pathways published, test operations registered, a patient."""

from __future__ import annotations

from pathlib import Path

import pytest
from marshmallow import Schema, fields

from hms.audit import Actor
from hms.workflow import operations, specs

FIXTURES = Path(__file__).parent / "fixtures"
CALLS: list[dict] = []


class RecordParams(Schema):
    patient_id = fields.Integer(required=True)
    note = fields.String(required=True)


@operations.operation("fixture.record", params=RecordParams)
def record_visit(ctx, params):
    """Record a visit (test operation): writes an audit row, which is a real domain write."""
    from hms import audit

    if params["note"].endswith("FAIL") or FAIL_NEXT:
        raise RuntimeError("the records service is down")
    audit.record(ctx.session, ctx.actor, "fixture.record", "patient", params["patient_id"],
                 patient_id=params["patient_id"], detail={"instance_id": ctx.instance_id})
    CALLS.append(dict(params, instance_id=ctx.instance_id))
    return {"recorded": True, "patient_id": params["patient_id"]}


FAIL_NEXT: list = []


@pytest.fixture
def fail_operations():
    FAIL_NEXT.append(True)
    yield
    FAIL_NEXT.clear()


@pytest.fixture
def pathways(app, database):
    """Publish every fixture pathway (callees first) through the real publish path (with lint)."""
    with database.transaction() as s:
        specs.sync_shipped(s, FIXTURES, Actor.system("test"))
    CALLS.clear()
    return {p.stem for p in FIXTURES.glob("*.bpmn")}


@pytest.fixture
def patient_id(database):
    from hms.patients.services import register_patient

    with database.transaction() as s:
        p = register_patient(s, Actor.system("test"), {
            "name": "Bilal Ahmed", "sex": "male", "date_of_birth": "1988-04-12",
            "cnic": "35202-1234567-1", "mobile": "0300-1234567", "relation": "S/O",
            "guardian_name": "Ahmed Khan", "city": "Lahore",
            "allergies": [{"substance": "Penicillin", "reaction": "rash", "severity": "severe"}]})
        return p.id


def actor_of(database, username: str) -> Actor:
    from sqlalchemy import select

    from hms.auth.models import User
    from hms.auth.services import actor_for

    with database.transaction(readonly=True) as s:
        return actor_for(s.execute(select(User).where(User.username == username)).scalar_one())
