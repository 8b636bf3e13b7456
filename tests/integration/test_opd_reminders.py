"""Follow-up reminders: found the day before, sent once however often the job is asked
for or run, never logged with the patient's name, and posted to an HTTP gateway when one is
configured (a local test server here, never a real one)."""

from __future__ import annotations

import json
import logging
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from sqlalchemy import select

from departments.opd import notify, services
from departments.opd.models import OutboxMessage
from hms import jobs, settings
from hms.jobs import JobRun
from tests.integration.test_opd_support import actor_for, audit_actions, check_in, make_patient


@pytest.fixture
def opd(database, config, make_department, make_user, monkeypatch):
    monkeypatch.delenv(notify.GATEWAY_ENV, raising=False)
    jobs.init(config, database)
    department = make_department("GM", "General Medicine")
    doctor = make_user("dr_ayesha", "doctor", department_ids=[department], full_name="Dr. Ayesha Siddiqui")
    clerk = make_user("rubina", "reception")
    with database.transaction(readonly=True) as s:
        today = services.local_today(s)
    yield type("Opd", (), {"department": department, "doctor": actor_for(doctor, "doctor"),
                           "clerk": actor_for(clerk, "reception"), "today": today})
    jobs.reset()


def consulted(database, opd, follow_up, *, name="Zainab Bibi", mobile="0300-7654321") -> int:
    """An encounter whose signed consultation set this follow-up date."""
    e = check_in(database, opd.clerk, make_patient(database, name, mobile=mobile, sex="female"), opd.department)
    with database.transaction() as s:
        services.save_consultation(s, opd.doctor, e.id, {
            "chief_complaint": "Cough", "diagnoses": [{"code": "J06.9"}],
            "follow_up_date": follow_up.isoformat() if follow_up else None})
    return e.id


def outbox(database) -> list[OutboxMessage]:
    with database.transaction(readonly=True) as s:
        return list(s.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def test_due_reminders_are_queued_once_in_the_outbox(database, opd, caplog):
    later = consulted(database, opd, opd.today + timedelta(days=9), name="Later Patient")
    no_mobile = consulted(database, opd, opd.today + timedelta(days=9), name="Mobile Less", mobile=None)
    due = consulted(database, opd, opd.today + timedelta(days=9))
    assert outbox(database) == []
    caplog.set_level(logging.INFO)
    day_before = opd.today + timedelta(days=8)
    with database.transaction() as s:
        assert notify.send_due_reminders(s, day_before) == 2  # not the patient without a mobile
    # The jobs ran inline after the commit.
    rows = outbox(database)
    assert [r.key for r in rows] == [f"followup:encounter:{later}", f"followup:encounter:{due}"]
    message = rows[1]
    assert message.to_mobile == "+923007654321" and message.status == "queued" and message.channel == "outbox"
    assert message.text.startswith("Assalam-o-Alaikum Zainab, your follow-up at our hospital is on ")
    assert (opd.today + timedelta(days=9)).strftime("%d %b %Y") in message.text
    # Asking again (the daily run repeated, a second worker) sends nothing more.
    with database.transaction() as s:
        assert notify.send_due_reminders(s, day_before) == 0
    # Running the job itself twice sends nothing more either.
    for _ in range(2):
        with database.transaction() as s:
            notify.send_followup_reminder(s, due)
    assert len(outbox(database)) == 2
    with database.transaction(readonly=True) as s:
        runs = list(s.scalars(select(JobRun).where(JobRun.name == notify.JOB_NAME)))
    assert sorted(r.status for r in runs) == ["done", "done"]
    assert no_mobile not in [int(r.key.rsplit(":", 1)[1]) for r in runs]
    # Logs name the key, never the patient or the message.
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"reminder queued followup:encounter:{due}" in logged
    assert "Zainab" not in logged and "+92300" not in logged and "Assalam" not in logged
    [sent, _] = audit_actions(database, "opd.reminder.send")
    assert sent.detail == {"key": f"followup:encounter:{later}", "channel": "outbox"}


def test_a_follow_up_tomorrow_is_queued_when_the_consultation_is_signed(database, opd):
    settings_value = "Shifa Clinic, Multan"
    with database.transaction() as s:
        settings.set_value(s, opd.doctor, notify.HOSPITAL_NAME, settings_value)
    encounter_id = consulted(database, opd, opd.today + timedelta(days=1))
    [row] = outbox(database)
    assert row.key == f"followup:encounter:{encounter_id}" and "at Shifa Clinic, Multan is on" in row.text
    with database.transaction() as s:  # the evening's daily run finds it already queued
        assert notify.send_due_reminders(s, opd.today) == 0
    assert len(outbox(database)) == 1


def test_no_reminder_for_a_past_follow_up_or_none(database, opd):
    encounter_id = consulted(database, opd, None)
    with database.transaction() as s:
        notify.send_followup_reminder(s, encounter_id)
        notify.send_followup_reminder(s, 999999)
    assert outbox(database) == []


class _Gateway(BaseHTTPRequestHandler):
    received: list = []
    status = 202

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((json.loads(body), self.headers.get("Idempotency-Key")))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture
def gateway(monkeypatch):
    _Gateway.received = []
    _Gateway.status = 202
    server = HTTPServer(("127.0.0.1", 0), _Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(notify.GATEWAY_ENV, f"http://127.0.0.1:{server.server_port}/sms")
    yield _Gateway
    server.shutdown()
    server.server_close()


def test_the_http_gateway_gets_the_message_once(database, opd, gateway):
    encounter_id = consulted(database, opd, opd.today + timedelta(days=3))
    with database.transaction() as s:
        assert isinstance(notify.get_notifier(s), notify.HttpGatewayNotifier)
        assert notify.send_due_reminders(s, opd.today + timedelta(days=2)) == 1
    key = f"followup:encounter:{encounter_id}"
    [(payload, idempotency)] = gateway.received
    assert payload["to"] == "+923007654321" and payload["key"] == key and idempotency == key
    assert payload["text"].startswith("Assalam-o-Alaikum Zainab")
    [row] = outbox(database)
    assert row.status == "sent" and row.sent_at is not None and row.channel == "http"
    with database.transaction() as s:
        notify.send_followup_reminder(s, encounter_id)
    assert len(gateway.received) == 1


def test_a_gateway_failure_rolls_back_and_is_retried(database, opd, gateway):
    encounter_id = consulted(database, opd, opd.today + timedelta(days=3))
    gateway.status = 503
    with pytest.raises(notify.GatewayError) as exc:
        with database.transaction() as s:
            notify.send_followup_reminder(s, encounter_id)
    assert "HTTP 503" in str(exc.value) and "Zainab" not in str(exc.value)
    assert outbox(database) == []  # nothing recorded as sent
    gateway.status = 200
    with database.transaction() as s:
        notify.send_followup_reminder(s, encounter_id)
    assert [r.status for r in outbox(database)] == ["sent"] and len(gateway.received) == 2


def test_the_outbox_is_the_default_notifier(database, opd, monkeypatch):
    monkeypatch.delenv(notify.GATEWAY_ENV, raising=False)
    with database.transaction() as s:
        assert isinstance(notify.get_notifier(s), notify.OutboxNotifier)
        assert notify.OutboxNotifier(s).send("+923001111111", "hello", "test:key") is True
        assert notify.OutboxNotifier(s).send("+923001111111", "hello again", "test:key") is False
    assert [r.text for r in outbox(database)] == ["hello"]


def test_hourly_sweep_queues_tomorrows_reminders_once(database, monkeypatch):
    """The ticker's periodic sweep runs send_due_reminders; twice in an hour is once."""
    from datetime import timedelta

    from hms import jobs
    from hms.db import utcnow

    calls = []
    monkeypatch.setattr("departments.opd.notify.send_due_reminders", lambda session, today: calls.append(today) or 0)
    monkeypatch.setattr(jobs, "_LAST_RUN", {})
    now = utcnow()
    assert "opd.followup_reminders" in jobs.run_periodic(database, now)
    assert "opd.followup_reminders" not in jobs.run_periodic(database, now + timedelta(minutes=30))
    assert "opd.followup_reminders" in jobs.run_periodic(database, now + timedelta(minutes=61))
    assert len(calls) == 2
