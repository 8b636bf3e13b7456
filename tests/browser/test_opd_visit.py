"""One OPD visit walked through the real pages, in Chromium, by every role in turn.

Reception checks the patient in and reads out the token; the cashier takes the consultation
fee on the bill; the nurse records the vitals; the doctor sees the allergy in the banner,
writes the consultation with a lab test and a medicine; the pharmacist dispenses; the cashier
takes the balance; the lab collects, enters and (pathologist) verifies the results; the doctor
reviews them and finds the result and the visit on the patient's record.

Every step goes through the page a person at that desk would use: My work (/work) and the
task form, the check-in page, the bills page. One browser page is shared; each role logs in
through the login page and logs out with the top bar's button. Values are typed, Tab moves
between fields and Enter or Space does what it does for a keyboard user; selects are chosen
with select_option (type-ahead on a closed <select> is platform-specific).
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.journeys.conftest import clinic, patient  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser

PATIENT_NAME = "Bilal Ahmed"  # the `patient` fixture: allergic to penicillin (severe)
MAX_TABS_BETWEEN_FIELDS = 6

TRIAGE = [  # (field name, typed value) in the order the nurse meets them
    ("chief_complaint", "Fever and body aches for 3 days"),
    ("temperature_c", "38.4"),
    ("pulse", "96"),
    ("systolic_bp", "128"),
    ("diastolic_bp", "84"),
    ("respiratory_rate", "18"),
    ("spo2", "97"),
    ("weight_kg", "72"),
    ("height_cm", "172"),
]

# Plausible adult male values, so the report carries no flags; anything else gets "7".
CBC_VALUES = {"HB": "14.1", "RBC": "4.9", "HCT": "43", "MCV": "88", "MCH": "29", "MCHC": "33", "TLC": "7.2",
              "NEUT": "60", "LYMPH": "30", "MONO": "6", "EOS": "3", "BASO": "1", "PLT": "250"}


# --------------------------------------------------------------------------- helpers

def _focused_name(page) -> str | None:
    return page.evaluate("() => document.activeElement && document.activeElement.getAttribute('name')")


def _tab_to(page, name: str) -> None:
    """Press Tab until the field `name` has the focus; fail if the keyboard cannot reach it."""
    for _ in range(MAX_TABS_BETWEEN_FIELDS):
        if _focused_name(page) == name:
            return
        page.keyboard.press("Tab")
    assert _focused_name(page) == name, f"Tab never reached the {name!r} field"


def _type_fields(page, pairs) -> None:
    """Focus the first field, then type each value and Tab on to the next field."""
    page.locator(f"[name='{pairs[0][0]}']").first.focus()
    for name, value in pairs:
        _tab_to(page, name)
        page.keyboard.type(value)


def _log_out(page) -> None:
    page.locator("header.topbar").get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login"))


def _switch_to(page, log_in, username: str) -> None:
    if page.locator("header.topbar").get_by_role("button", name="Log out").count():
        _log_out(page)
    log_in(username)


def _queue_row(page, title: str):
    return page.locator("#queue tr").filter(
        has=page.get_by_role("link", name=title, exact=True)).filter(has_text=PATIENT_NAME)


def _open_task(page, title: str) -> int:
    """From My work, open the task `title` of our patient; returns the task id."""
    page.goto("/work")
    row = _queue_row(page, title)
    expect(row, f"{title!r} is not in this role's queue").to_have_count(1)
    row.get_by_role("link", name=title, exact=True).click()
    expect(page).to_have_url(re.compile(r"/work/tasks/\d+$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(title)
    banner = page.get_by_role("region", name="Patient")
    expect(banner).to_contain_text(PATIENT_NAME)
    return int(page.url.rsplit("/", 1)[1])


def _complete(page, title: str, *, press_enter_in: str | None = None) -> None:
    """Submit the task form (Enter in a text field, or the Complete button) and land on My work."""
    if press_enter_in:
        page.locator(f"[name='{press_enter_in}']").press("Enter")
    else:
        page.get_by_role("button", name="Complete").click()
    # The step behind the button runs service tasks of several departments; on a busy
    # two-core CI machine (PostgreSQL suite beside the live server) it can take seconds.
    expect(page).to_have_url(re.compile(r"/work$"), timeout=30_000)
    expect(page.get_by_role("status").filter(has_text=f"Done: {title}.")).to_be_visible()
    expect(_queue_row(page, title)).to_have_count(0)


def _tick(page, label: str) -> None:
    box = page.get_by_label(label)
    expect(box).not_to_be_checked()
    box.focus()
    page.keyboard.press("Space")
    expect(box).to_be_checked()


def _open_bill(page, mrn: str) -> None:
    """Bills to collect: type the MRN in the (autofocused) search box, Enter, open the bill."""
    page.goto("/bills")
    expect(page.locator("#q")).to_be_focused()
    page.keyboard.type(mrn)
    page.keyboard.press("Enter")
    rows = page.locator("main table tbody tr").filter(has_text=mrn)
    expect(rows).to_have_count(1)
    rows.get_by_role("link").first.click()
    expect(page).to_have_url(re.compile(r"/bills/\d+$"))
    expect(page.get_by_role("region", name="Bill")).to_contain_text(PATIENT_NAME)


def _totals(page) -> dict[str, str]:
    table = page.get_by_role("table", name="Totals")
    return {row.locator("th").text_content().strip(): row.locator("td").text_content().strip()
            for row in table.locator("tr").all()}


def _pay_balance_in_cash(page) -> None:
    """Take the whole balance (the amount comes prefilled) in cash; the bill is then settled."""
    amount = page.locator("#amount")
    expect(amount).to_be_focused()  # autofocus: the cashier just presses Enter
    assert float(amount.input_value().replace(",", "")) > 0
    expect(page.locator("#method")).to_have_value("cash")
    amount.press("Enter")
    expect(page.get_by_role("status").filter(has_text="Payment recorded: receipt")).to_be_visible()
    totals = _totals(page)
    assert totals["Balance"].endswith(" 0.00"), totals
    expect(page.locator("#amount")).to_have_count(0)  # nothing more to take
    expect(page.get_by_text("Nothing is due on this bill.")).to_be_visible()


# --------------------------------------------------------------------------- the visit

def test_opd_visit_through_every_desk(page, live_server, log_in, shot, clinic, patient):  # noqa: F811
    mrn = patient["mrn"]

    # --- Reception: find the patient, choose the department, check in, read the token.
    log_in("rec")
    page.goto("/opd/checkin")
    search = page.locator("#patient_q")
    search.focus()
    page.keyboard.type("Bilal")
    choice = page.locator("#patient-results button").filter(has_text=mrn)
    expect(choice).to_be_visible()
    page.keyboard.press("ArrowDown")
    expect(choice).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#patient-chosen")).to_contain_text(PATIENT_NAME)
    expect(search).to_be_focused()
    _tab_to(page, "department_id")
    page.locator("#department_id").select_option(label="General Medicine")
    shot("reception-checkin-form")
    submit = page.get_by_role("button", name="Check in and issue token")
    submit.focus()
    page.keyboard.press("Enter")
    done = page.get_by_role("status").filter(has_text="Checked in")
    expect(done).to_contain_text(f"{mrn} · {PATIENT_NAME}")
    expect(done.locator("[data-token]")).to_have_text("1")
    expect(done).to_contain_text("General Medicine")
    shot("reception-token")
    # Triage waits for the fee: nothing for the nurse yet.
    assert clinic["nurse"].get("/api/v1/tasks").get_json()["items"] == []

    # --- Cashier: the fee task is waiting; take the fee on the bill, then confirm the task.
    _switch_to(page, log_in, "cash")
    fee_task = _open_task(page, "Collect consultation fee")
    expect(page.locator("section.context")).to_contain_text("Bill")
    shot("cashier-fee-task")
    _open_bill(page, mrn)
    expect(page.locator("main")).to_contain_text("Consultation")
    _pay_balance_in_cash(page)
    shot("cashier-fee-paid")
    page.goto(f"/work/tasks/{fee_task}")
    _tick(page, "Payment taken at the counter")
    _complete(page, "Collect consultation fee")
    instance_id = page.request.get(f"/api/v1/tasks/{fee_task}").json()["instance_id"]

    # --- Nurse: triage, typed field after field.
    _switch_to(page, log_in, "nurse")
    _open_task(page, "Triage")
    _type_fields(page, TRIAGE)
    _tab_to(page, "pain_score")
    page.keyboard.type("4")
    routine = page.get_by_role("radio", name="Routine")
    routine.focus()
    page.keyboard.press("Space")
    expect(routine).to_be_checked()
    shot("nurse-triage")
    _complete(page, "Triage", press_enter_in="height_cm")

    # --- Doctor: the allergy is in the banner; consultation with a lab test and a medicine.
    _switch_to(page, log_in, "doc")
    _open_task(page, "Consultation")
    banner = page.get_by_role("region", name="Patient")
    expect(banner.locator(".allergy")).to_contain_text("Penicillin (severe)")
    # The nurse's triage reaches the doctor (as its summary: BMI, flags, priority).
    expect(page.get_by_role("region", name="From earlier steps")).to_contain_text("fever")
    complaint = page.locator("[name=chief_complaint]")
    complaint.focus()
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type("Fever for 3 days")
    _type_fields(page, [("history", "No travel. No cough."), ("examination", "Febrile, chest clear.")])
    _type_fields(page, [("diagnoses-0-code", "R50.9"), ("diagnoses-0-note", "Likely viral")])
    _type_fields(page, [("notes", "Paracetamol, fluids, CBC. Review with the report.")])
    page.locator("#f-lab_tests-0").focus()
    page.keyboard.type("CBC")
    _type_fields(page, [("prescriptions-0-item_code", "PCM500T"), ("prescriptions-0-dose", "2")])
    _tab_to(page, "prescriptions-0-frequency")
    page.locator("[name='prescriptions-0-frequency']").select_option("TDS")
    _tab_to(page, "prescriptions-0-duration_days")
    page.keyboard.type("3")
    shot("doctor-consultation")
    _complete(page, "Consultation")

    # --- Pharmacist: the lines come prefilled from the prescription (2 x TDS x 3 days = 18).
    _switch_to(page, log_in, "pharm")
    _open_task(page, "Dispense medicines")
    expect(page.locator("[name='lines-0-item_code']")).to_have_value("PCM500T")
    expect(page.locator("[name='lines-0-quantity']")).to_have_value("18")
    shot("pharmacist-dispense")
    _complete(page, "Dispense medicines", press_enter_in="lines-0-quantity")

    # --- Cashier: the balance (lab test and medicines) is taken, then the task confirmed.
    _switch_to(page, log_in, "cash")
    payment_task = _open_task(page, "Collect payment")
    _open_bill(page, mrn)
    charges = page.locator("section[aria-labelledby=lines-title] table").first
    expect(charges.locator("tbody tr")).to_have_count(3)  # consultation, CBC, paracetamol
    expect(charges).to_contain_text("Complete blood count")
    expect(charges).to_contain_text("Paracetamol 500 mg")
    assert not _totals(page)["Balance"].endswith(" 0.00")
    shot("cashier-balance-due")
    _pay_balance_in_cash(page)
    shot("cashier-balance-paid")
    page.goto(f"/work/tasks/{payment_task}")
    _tick(page, "Payment taken at the counter")
    _complete(page, "Collect payment")

    # --- Lab technician: collect the sample, then type a value on every analyte row.
    _switch_to(page, log_in, "lab")
    _open_task(page, "Collect sample")
    expect(page.get_by_label("Sample collected and labelled")).to_be_checked()
    shot("lab-collect")
    _complete(page, "Collect sample")
    _open_task(page, "Enter results")
    analytes = page.locator("input[name$='-analyte_code']")
    rows = [(a.get_attribute("name").rsplit("-", 1)[0], a.input_value()) for a in analytes.all()]
    prefilled = [(prefix, code) for prefix, code in rows if code]
    assert {code for _, code in prefilled} >= {"HB", "TLC", "PLT"}, prefilled
    for prefix, code in prefilled:
        expect(page.locator(f"[name='{prefix}-test_code']")).to_have_value("CBC")
        page.locator(f"[name='{prefix}-value']").focus()
        page.keyboard.type(CBC_VALUES.get(code.upper(), "7"))
    shot("lab-results")
    _complete(page, "Enter results", press_enter_in=f"{prefilled[-1][0]}-value")

    # --- Pathologist: verify.
    _switch_to(page, log_in, "path")
    _open_task(page, "Verify results")
    _tick(page, "Approve the results")
    shot("pathologist-verify")
    _complete(page, "Verify results")

    # --- Doctor: review the results; the visit is over; the record has it all.
    _switch_to(page, log_in, "doc")
    _open_task(page, "Review lab results")
    _tick(page, "I have reviewed the results")
    page.locator("[name=action_note]").focus()
    page.keyboard.type("Normal count. Continue paracetamol.")
    shot("doctor-review")
    _complete(page, "Review lab results")

    visit = page.request.get(f"/api/v1/process-instances/{instance_id}")
    assert visit.ok, visit.text()
    assert visit.json()["status"] == "completed" and visit.json()["open_tasks"] == []
    page.goto(f"/patients/{patient['id']}/record")
    expect(page.get_by_role("region", name="Patient")).to_contain_text("Penicillin")
    visits = page.locator("article.visit")
    expect(visits).to_have_count(1)
    expect(visits).to_contain_text("General Medicine")
    expect(visits).to_contain_text("R50.9")
    expect(visits).to_contain_text("Fever for 3 days")
    expect(visits).to_contain_text("PCM500T")
    expect(visits).to_contain_text("CBC")
    lab = page.locator("section[aria-labelledby=lab-title]")
    haemoglobin = lab.locator("tbody tr").filter(has=page.get_by_role("cell", name="Haemoglobin", exact=True))
    expect(haemoglobin).to_have_count(1)
    expect(haemoglobin).to_contain_text("Complete blood count")
    expect(haemoglobin).to_contain_text("14.1 g/dL")
    shot("doctor-record")
