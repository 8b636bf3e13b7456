"""Follow-up reminders to patients' mobiles, through a pluggable notifier.

- `Notifier` is anything with `send(to_mobile, text, key) -> bool` (True: sent or queued
  now; False: this key was handled before, nothing was sent).
- `OutboxNotifier` (the default) writes an `outbox_message` row (status queued) for an SMS
  relay to pick up. `HttpGatewayNotifier` (chosen when HMS_SMS_GATEWAY_URL is set) writes
  the same row and POSTs {"to", "text", "key"} as JSON to the gateway (10 s timeout),
  marking the row sent. Either way the row's unique key means one message per key.
- The job `opd.send_followup_reminder(session, encounter_id)` sends the reminder of one
  encounter, with key "followup:encounter:<id>" as both the job key and the outbox key:
  enqueueing twice, delivering twice or running the job twice sends one message.
- `send_due_reminders(session, today)` enqueues that job for every encounter whose
  follow-up date is tomorrow (run daily by the ticker).

The message holds the patient's first name and the date. It is stored in the outbox
(it is the message) but never logged: logs name the key only. The gateway URL is read from
the environment when a notifier is chosen, never at import.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from datetime import date, timedelta
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from departments.opd.models import Encounter, OutboxMessage
from hms import audit, jobs, settings
from hms.audit import Actor
from hms.db import utcnow
from hms.patients.models import Patient
from hms.patients.services import local_today

log = logging.getLogger(__name__)

JOB_NAME = "opd.send_followup_reminder"
GATEWAY_ENV = "HMS_SMS_GATEWAY_URL"
GATEWAY_TIMEOUT_SECONDS = 10.0
HOSPITAL_NAME = settings.declare("opd.hospital_name", str, "our hospital",
                                 "Hospital name used in SMS reminders to patients.")


class Notifier(Protocol):
    def send(self, to_mobile: str, text: str, key: str) -> bool:
        """Send (or queue) `text` to `to_mobile` once per `key`; False when the key was used."""


class GatewayError(RuntimeError):
    """The SMS gateway did not accept the message. The text never holds the message."""


def _queue_row(session: Session, to_mobile: str, text: str, key: str, channel: str) -> bool:
    """INSERT the outbox row unless the key exists; True when this call inserted it."""
    dialect = session.get_bind().dialect.name
    ins = (postgresql if dialect == "postgresql" else sqlite).insert(OutboxMessage).values(
        key=key, to_mobile=to_mobile, text=text, status="queued", channel=channel, created_at=utcnow())
    stmt = ins.on_conflict_do_nothing(index_elements=[OutboxMessage.key]).returning(OutboxMessage.id)
    return session.execute(stmt).first() is not None


class OutboxNotifier:
    """Queues the message in the outbox table, for an SMS relay to send."""

    channel = "outbox"

    def __init__(self, session: Session):
        self.session = session

    def send(self, to_mobile: str, text: str, key: str) -> bool:
        if not _queue_row(self.session, to_mobile, text, key, self.channel):
            log.info("reminder skipped %s: already queued", key)
            return False
        log.info("reminder queued %s", key)
        return True


class HttpGatewayNotifier:
    """Posts the message to an HTTP SMS gateway and records it in the outbox as sent.

    The outbox row is written first (nothing is posted for a key already there), then the
    POST; a failure raises GatewayError, the caller's transaction (the job's) rolls back
    with the row, and the job's retry posts again. The gateway also gets the key (JSON
    "key" and an Idempotency-Key header) to drop a repeat after a lost commit.
    """

    channel = "http"

    def __init__(self, session: Session, url: str, timeout: float = GATEWAY_TIMEOUT_SECONDS):
        self.session = session
        self.url = url
        self.timeout = timeout

    def send(self, to_mobile: str, text: str, key: str) -> bool:
        if not _queue_row(self.session, to_mobile, text, key, self.channel):
            log.info("reminder skipped %s: already sent", key)
            return False
        body = json.dumps({"to": to_mobile, "text": text, "key": key}).encode()
        request = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "Idempotency-Key": key})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            raise GatewayError(f"SMS gateway refused {key}: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise GatewayError(f"SMS gateway unreachable for {key}: {type(exc).__name__}") from None
        if not 200 <= status < 300:
            raise GatewayError(f"SMS gateway refused {key}: HTTP {status}")
        row = self.session.scalar(select(OutboxMessage).where(OutboxMessage.key == key))
        row.status, row.sent_at = "sent", utcnow()
        self.session.flush()
        log.info("reminder sent %s", key)
        return True


def gateway_url() -> str | None:
    """HMS_SMS_GATEWAY_URL, read now (not at import)."""
    url = (os.environ.get(GATEWAY_ENV) or "").strip()
    return url or None


def get_notifier(session: Session) -> Notifier:
    url = gateway_url()
    return HttpGatewayNotifier(session, url) if url else OutboxNotifier(session)


def reminder_key(encounter_id: int) -> str:
    return f"followup:encounter:{int(encounter_id)}"


def reminder_text(first_name: str, hospital: str, day: date) -> str:
    return (f"Assalam-o-Alaikum {first_name}, your follow-up at {hospital} is on {day:%a %d %b %Y}. "
            "Please bring your prescription. Shukriya.")


@jobs.job(JOB_NAME, retries=3, backoff=(60, 300, 900))
def send_followup_reminder(session: Session, encounter_id: int) -> None:
    """Send the follow-up reminder of one encounter, once (key "followup:encounter:<id>").
    Nothing is sent when the encounter has no follow-up date, the date has passed, or the
    patient has no mobile number. Writes the outbox row and audit "opd.reminder.send"."""
    key = reminder_key(encounter_id)
    encounter = session.get(Encounter, int(encounter_id))
    if encounter is None or encounter.follow_up_date is None:
        log.info("reminder skipped %s: no follow-up", key)
        return
    if encounter.follow_up_date < local_today(session):
        log.info("reminder skipped %s: the follow-up date has passed", key)
        return
    patient = session.get(Patient, encounter.patient_id)
    if not patient.mobile:
        log.info("reminder skipped %s: no mobile number", key)
        return
    first_name = (patient.name or "").split()[0] if (patient.name or "").split() else ""
    text = reminder_text(first_name, settings.get(session, HOSPITAL_NAME), encounter.follow_up_date)
    notifier = get_notifier(session)
    if notifier.send(patient.mobile, text, key):
        audit.record(session, Actor.system("opd.reminders"), "opd.reminder.send", "opd_encounter", encounter.id,
                     patient_id=patient.id, detail={"key": key, "channel": getattr(notifier, "channel", None)})


def enqueue_reminder(session: Session, encounter_id: int) -> bool:
    """Enqueue the reminder job of one encounter (after commit); False when it was already."""
    return jobs.enqueue(session, JOB_NAME, key=reminder_key(encounter_id), encounter_id=int(encounter_id))


def enqueue_if_due(session: Session, encounter: Encounter, today: date) -> bool:
    """Enqueue the reminder now when the follow-up is tomorrow (the daily run for today
    may have passed); later dates are left to send_due_reminders."""
    if encounter.follow_up_date == today + timedelta(days=1):
        return enqueue_reminder(session, encounter.id)
    return False


def send_due_reminders(session: Session, today: date) -> int:
    """Enqueue the reminder of every encounter whose follow-up date is the day after
    `today` (local) and whose patient has a mobile number; return how many were newly
    enqueued (keys enqueued before count nothing). Left visits are skipped."""
    tomorrow = today + timedelta(days=1)
    ids = session.scalars(select(Encounter.id).join(Patient, Patient.id == Encounter.patient_id).where(
        Encounter.follow_up_date == tomorrow, Encounter.status != "left",
        Patient.mobile.is_not(None)).order_by(Encounter.id))
    return sum(1 for encounter_id in list(ids) if enqueue_reminder(session, encounter_id))


@jobs.periodic("opd.followup_reminders", every_seconds=3600)
def queue_tomorrows_reminders(session: Session) -> int:
    """Hourly sweep (idempotent per encounter): queue reminders for tomorrow's follow-ups."""
    from hms.patients.services import local_today

    return send_due_reminders(session, local_today(session))
