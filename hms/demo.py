"""Loads the demo hospital (`hms demo`, run by `make run`).

One small loader per area, run in order by `load_demo`; each adds what is missing and
reports one summary line, so running the demo again changes nothing and says so. Later
areas (formulary, lab tests ...) add a loader to `LOADERS`.

The data itself lives in hms.demo_data. Departments, wards and beds are reference data
with no service of their own yet, so they are written here directly; accounts and
patients go through their services, which validate and audit them like any other.
"""

from __future__ import annotations

import importlib
import re
from typing import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from hms import demo_data
from hms.audit import Actor
from hms.auth.models import User
from hms.auth.services import create_user
from hms.org.models import Department
from wards.models import Bed, Room, Ward

DEMO_ACTOR_NAME = "demo"


def _actor() -> Actor:
    return Actor.system(DEMO_ACTOR_NAME)


def _summary(created: int, present: int, what: str, extra: str = "") -> str:
    return f"{what}: {created} created{extra}, {present} already present"


def load_departments(session: Session) -> str:
    """The six demo departments, matched by code."""
    existing = set(session.execute(select(Department.code)).scalars())
    created = 0
    for code, name, kind in demo_data.DEPARTMENTS:
        if code in existing:
            continue
        session.add(Department(code=code, name=name, kind=kind))
        created += 1
    session.flush()
    return _summary(created, len(demo_data.DEPARTMENTS) - created, "departments")


def _department_ids(session: Session) -> dict[str, int]:
    return {code: id_ for code, id_ in session.execute(select(Department.code, Department.id))}


def _ward_ids(session: Session) -> dict[str, int]:
    return {code: id_ for code, id_ in session.execute(select(Ward.code, Ward.id))}


def _add_ward(session: Session, department_id: int, spec) -> int:
    """Create one ward with its rooms and beds; returns the number of beds."""
    code, name, _dep, ward_type, gender, rooms = spec
    ward = Ward(code=code, name=name, department_id=department_id, ward_type=ward_type, gender=gender)
    session.add(ward)
    session.flush()
    number = 0
    for room_name, beds in rooms:
        room_id = None
        if room_name is not None:
            room = Room(ward_id=ward.id, name=room_name)
            session.add(room)
            session.flush()
            room_id = room.id
        for _ in range(beds):
            number += 1
            session.add(Bed(ward_id=ward.id, room_id=room_id, label=f"{code}-{number:02d}"))
    session.flush()
    return number


def load_wards(session: Session) -> str:
    """The seven demo wards with rooms and beds. A ward that exists (by code) is left as
    it is, beds included: staff may have changed it since."""
    departments = _department_ids(session)
    existing = set(_ward_ids(session))
    created = beds = 0
    for spec in demo_data.WARDS:
        if spec[0] in existing:
            continue
        beds += _add_ward(session, departments[spec[2]], spec)
        created += 1
    return _summary(created, len(demo_data.WARDS) - created, "wards", f" ({beds} beds)" if created else "")


def load_users(session: Session) -> str:
    """One account per role (password hms-demo, flagged is_demo), scoped to departments
    and wards by code. Existing usernames are skipped, whatever their state."""
    departments, wards = _department_ids(session), _ward_ids(session)
    demo_wards = [code for code, *_ in demo_data.WARDS]
    existing = set(session.execute(select(User.username)).scalars())
    created = 0
    for username, full_name, roles, department_codes, ward_codes in demo_data.USERS:
        if username in existing:
            continue
        if ward_codes == demo_data.ALL_WARDS:
            ward_codes = demo_wards
        create_user(session, _actor(), username=username, full_name=full_name,
                    password=demo_data.DEMO_PASSWORD, roles=roles,
                    department_ids=[departments[c] for c in department_codes],
                    ward_ids=[wards[c] for c in ward_codes], is_demo=True)
        created += 1
    return _summary(created, len(demo_data.USERS) - created, "users")


def _register_patient() -> Callable | None:
    """hms.patients.services.register_patient, or None while the patient index is absent."""
    try:
        services = importlib.import_module("hms.patients.services")
    except ImportError:
        return None
    return getattr(services, "register_patient", None)


def _digits(number: str) -> str:
    return re.sub(r"\D", "", number)


def _registered_identities(session: Session, numbers: list[str]) -> set[str]:
    """Which of these CNIC / Form-B numbers are registered already (as digits).

    Both the dashed and the digits-only spelling are looked up, whichever way the patient
    index stores them."""
    from hms.patients.models import Patient

    spellings = set(numbers) | {_digits(n) for n in numbers}
    found: set[str] = set()
    for column_name in ("cnic", "form_b"):
        column = getattr(Patient, column_name, None)
        if column is not None:
            found.update(_digits(v) for v in session.execute(select(column).where(column.in_(spellings))).scalars())
    return found


def load_patients(session: Session) -> str:
    """The 50 demo patients, registered in a fixed order (so MRNs are stable), skipping
    any whose CNIC or Form-B is already registered."""
    register = _register_patient()
    if register is None:
        return "patients: skipped, the patient index (hms.patients.services.register_patient) is not installed"
    patients = demo_data.demo_patients()
    registered = _registered_identities(session, [demo_data.identity_of(p) for p in patients])
    created = 0
    for data in patients:
        if _digits(demo_data.identity_of(data)) in registered:
            continue
        # Demo people are distinct by construction; the fuzzy duplicate check (similar
        # names in one family) must not stop the load, while CNIC uniqueness still applies.
        register(session, _actor(), data, confirm_duplicate=True)
        created += 1
    return f"patients: {created} registered, {len(patients) - created} already present"


LOADERS: tuple[Callable[[Session], str], ...] = (
    load_departments,
    load_wards,
    load_users,
    load_patients,
)


PATHWAY_OWNERS = {"opd_visit": "GM", "lab_order": "PATH"}


def load_pathway_owners(session: Session) -> str:
    """Publish the shipped pathways (as start-up would) and give each to its department,
    so the head of General Medicine can change the OPD visit in the editor."""
    from hms.app import OPERATION_MODULES
    from hms.db import config_of
    from hms.workflow import editor, lint, operations, specs

    config = config_of(session)
    operations.register_domain_operations(OPERATION_MODULES)
    lint.register(config.forms_dir)
    specs.sync_shipped(session, config.workflows_dir, _actor(), failures={})
    created = present = 0
    for key, code in PATHWAY_OWNERS.items():
        department = session.execute(select(Department).where(Department.code == code)).scalar_one_or_none()
        if department is None or not editor.exists(session, key):
            continue
        owner = editor.owner_of(session, key)
        if owner is not None:
            present += 1
            continue
        editor.assign_owner(session, _actor(), key, department.id)
        created += 1
    return _summary(created, present, "pathway owners")


# Departments' own demo data (formulary, lab catalogue, tariffs, schedules): each module's
# `load(session, actor) -> list[str]` is idempotent like the loaders above.
DOMAIN_DEMOS: tuple[str, ...] = ("finance.demo", "inventory.demo", "departments.lab.demo", "departments.opd.demo")


def load_demo(session: Session) -> list[str]:
    """Load every demo area into `session` (the caller commits); summary lines."""
    lines = [loader(session) for loader in LOADERS]
    for module in DOMAIN_DEMOS:
        lines += importlib.import_module(module).load(session, _actor())
    lines.append(load_pathway_owners(session))
    return lines


def login_table() -> list[str]:
    """The demo logins as aligned text lines, for the CLI."""
    rows = [("username", "role", "name")]
    rows += [(u, ", ".join(roles), name) for u, name, roles, _d, _w in demo_data.USERS]
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    lines = [f"{u:<{width[0]}}  {r:<{width[1]}}  {n}" for u, r, n in rows]
    return [f"demo logins (password {demo_data.DEMO_PASSWORD}):", *("  " + line for line in lines)]
