"""The reception pages: search, keyboard-first registration, the patient page."""

from __future__ import annotations

import html
import re

import pytest
from sqlalchemy import select

from hms.audit import AuditLog

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf(client, url: str) -> str:
    resp = client.get(url)
    assert resp.status_code == 200, resp.status_code
    return CSRF_RE.search(resp.get_data(as_text=True)).group(1)


def form(**overrides) -> dict:
    data = {"name": "Ahmed Khan", "relation": "S/O", "guardian_name": "Abdul Rehman", "sex": "male",
            "date_of_birth": "1985-06-15", "age_years": "", "cnic": "35202-1234567-1", "form_b": "",
            "mobile": "0300-1234567", "address": "House 12, Gulberg", "city": "Lahore",
            "allergy_substance_1": "", "allergy_reaction_1": "", "allergy_severity_1": "",
            "allergy_substance_2": "", "allergy_reaction_2": "", "allergy_severity_2": ""}
    data.update(overrides)
    return data


def register_form(client, **overrides):
    token = csrf(client, "/patients/new")
    return client.post("/patients/new", data={"csrf_token": token, **form(**overrides)})


def text(resp) -> str:
    return html.unescape(resp.get_data(as_text=True))


def input_tag(page: str, name: str) -> str:
    match = re.search(r'<(?:input|select)[^>]*name="%s"[^>]*>' % re.escape(name), page)
    assert match, f"no field {name}"
    return match.group(0)


@pytest.fixture
def reception(as_role):
    return as_role("reception")


# --- registration form -----------------------------------------------------------------

def test_registration_form_is_keyboard_first(reception):
    resp = reception.get("/patients/new")
    assert resp.status_code == 200
    page = resp.get_data(as_text=True)
    assert "autofocus" in input_tag(page, "name")
    assert CSRF_RE.search(page)
    order = [m.start() for m in (re.search(f'name="{n}"', page) for n in
             ("name", "relation", "guardian_name", "sex", "date_of_birth", "age_years", "cnic", "form_b",
              "mobile", "address", "city", "allergy_substance_1", "allergy_severity_3"))]
    assert order == sorted(order), "fields must appear (and tab) in the order they are asked for"
    assert 'type="submit"' in page and "confirm_duplicate" not in page


def test_registration_redirects_to_the_patient_page_with_the_mrn(reception):
    resp = register_form(reception, allergy_substance_1="Penicillin", allergy_reaction_1="Rash",
                         allergy_severity_1="severe")
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/patients/1")
    page = text(reception.get("/patients/1"))
    assert "Registered HMS-000001" in page
    assert "Ahmed Khan" in page and "S/O Abdul Rehman" in page and "35202-1234567-1" in page
    assert "0300-1234567" in page and 'class="allergy"' in page and "Penicillin" in page


def test_invalid_form_shows_each_error_inline_and_keeps_the_values(reception):
    resp = register_form(reception, cnic="35202-123456-1", mobile="042-35761234", date_of_birth="",
                         age_years="200", allergy_substance_2="Dust", allergy_severity_2="huge")
    assert resp.status_code == 422
    page = text(resp)
    for field, message in [("cnic", "CNIC must be 13 digits, like 35202-1234567-1."),
                           ("mobile", "Enter a Pakistani mobile number like 0300-1234567."),
                           ("age_years", "Age must be between 0 and 130 years."),
                           ("allergy_severity_2", "Severity must be mild, moderate or severe.")]:
        tag = input_tag(page, field)
        assert 'aria-invalid="true"' in tag and f'aria-describedby="{field}-error"' in tag
        assert re.search(r'id="%s-error"[^>]*>%s<' % (field, re.escape(message)), page), field
    assert 'value="Ahmed Khan"' in input_tag(page, "name")
    assert 'value="35202-123456-1"' in input_tag(page, "cnic")
    assert 'value="Dust"' in input_tag(page, "allergy_substance_2")
    assert 'aria-invalid' not in input_tag(page, "name")
    assert "autofocus" not in input_tag(page, "name")  # the script focuses the first bad field instead


def test_future_birth_date_is_shown_next_to_the_field(reception):
    page = text(register_form(reception, date_of_birth="2999-01-01"))
    assert 'id="date_of_birth-error"' in page and "Date of birth cannot be in the future." in page


def test_possible_duplicate_shows_candidates_and_registers_when_confirmed(reception):
    register_form(reception, cnic="")
    resp = register_form(reception, cnic="", name="ahmed khan")
    assert resp.status_code == 409
    page = text(resp)
    assert "Possible duplicates" in page and 'href="/patients/1"' in page and "HMS-000001" in page
    assert 'name="confirm_duplicate"' in page and "Register anyway" in page
    resp = register_form(reception, cnic="", name="ahmed khan", confirm_duplicate="1")
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/patients/2")


def test_duplicate_cnic_on_the_form_names_and_links_the_existing_patient(reception):
    register_form(reception)
    resp = register_form(reception, name="Other Person", cnic="3520212345671", mobile="0321-5555555")
    assert resp.status_code == 409
    page = text(resp)
    assert "A patient with this CNIC is already registered: HMS-000001." in page
    assert 'href="/patients/1"' in page
    assert 'aria-invalid="true"' in input_tag(page, "cnic")


def test_form_without_csrf_token_is_refused(reception):
    resp = reception.post("/patients/new", data=form())
    assert resp.status_code == 400 and "csrf" in resp.get_data(as_text=True).lower()


# --- search page -----------------------------------------------------------------------

def test_search_page_lists_matches_with_links_and_pages(reception):
    for i in range(3):
        register_form(reception, name=f"Khan {i}", cnic="", mobile=f"0300-000000{i}")
    resp = reception.get("/patients?q=KHAN&size=2")
    assert resp.status_code == 200
    page = text(resp)
    assert "autofocus" in input_tag(page, "q") and 'value="KHAN"' in input_tag(page, "q")
    assert "Khan 0" in page and "Khan 1" in page and "Khan 2" not in page
    assert 'href="/patients/1"' in page and "Page 1 of 2" in page and "page=2" in page
    assert "Register a new patient" in page


def test_search_page_empty_state(reception):
    page = text(reception.get("/patients?q=<b>nobody</b>"))
    assert "No patient matches “<b>nobody</b>”." in page
    assert "<b>nobody</b>" not in reception.get("/patients?q=<b>nobody</b>").get_data(as_text=True)


def test_search_page_for_a_viewer_has_no_register_link(reception, as_role):
    register_form(reception)
    page = text(as_role("cashier").get("/patients?q=ahmed"))
    assert "Ahmed Khan" in page and "Register a new patient" not in page


# --- patient page ----------------------------------------------------------------------

def test_patient_page_is_audited_and_has_a_way_back(reception, database):
    register_form(reception)
    page = text(reception.get("/patients/1"))
    assert 'href="/patients"' in page and "Back to search" in page
    with database.transaction(readonly=True) as s:
        reads = s.scalars(select(AuditLog).where(AuditLog.action == "patient.read")).all()
    assert [r.patient_id for r in reads] == [1]
    assert reception.get("/patients/99").status_code == 404
    assert reception.get("/patients/99999999999999999999").status_code == 404


def test_edit_form_saves_and_shows_the_history(reception):
    register_form(reception)
    token = csrf(reception, "/patients/1")
    resp = reception.post("/patients/1/edit", data={"csrf_token": token, "version": "1",
                                                    **form(city="Multan", mobile="0345 7654321")})
    assert resp.status_code == 302
    page = text(reception.get("/patients/1"))
    assert "Saved changes to HMS-000001" in page and "0345-7654321" in page
    history = page[page.index("Demographic history"):]
    assert "city, mobile" in history and "u_reception_0" in history


def test_edit_form_unchanged_changes_nothing(reception):
    register_form(reception, date_of_birth="", age_years="40")
    page = reception.get("/patients/1").get_data(as_text=True)
    values = {name: (re.search(r'name="%s"[^>]*value="([^"]*)"' % name, page) or [None, ""])[1]
              for name in ("name", "guardian_name", "date_of_birth", "age_years", "cnic", "form_b", "mobile",
                           "address", "city", "version")}
    values.update(relation="S/O", sex="male")
    assert values["age_years"] == "40" and values["date_of_birth"] == ""
    resp = reception.post("/patients/1/edit", data={"csrf_token": CSRF_RE.search(page).group(1),
                                                    **{k: html.unescape(v) for k, v in values.items()}})
    assert resp.status_code == 302
    assert "Nothing was changed." in text(reception.get("/patients/1"))
    assert reception.get("/api/v1/patients/1").get_json()["version"] == 1


def test_edit_form_errors_and_stale_version_are_shown_on_the_page(reception):
    register_form(reception)
    token = csrf(reception, "/patients/1")
    resp = reception.post("/patients/1/edit", data={"csrf_token": token, "version": "1", **form(mobile="12345")})
    assert resp.status_code == 422
    page = text(resp)
    assert 'aria-invalid="true"' in input_tag(page, "mobile") and 'value="12345"' in input_tag(page, "mobile")
    assert "<details open>" in page.replace("<details  open>", "<details open>")
    reception.post("/patients/1/edit", data={"csrf_token": token, "version": "1", **form(city="Multan")})
    stale = reception.post("/patients/1/edit", data={"csrf_token": token, "version": "1", **form(city="Quetta")})
    assert stale.status_code == 409 and "Someone else changed this patient" in text(stale)


def test_nurse_records_an_allergy_from_the_patient_page(reception, as_role):
    register_form(reception)
    assert 'name="substance"' not in reception.get("/patients/1").get_data(as_text=True)
    nurse = as_role("nurse")
    token = csrf(nurse, "/patients/1")
    resp = nurse.post("/patients/1/allergies", data={"csrf_token": token, "substance": "Latex",
                                                     "reaction": "Hives", "severity": "mild"})
    assert resp.status_code == 302
    page = text(nurse.get("/patients/1"))
    assert "Allergy recorded." in page and "Latex" in page
    bad = nurse.post("/patients/1/allergies", data={"csrf_token": token, "substance": "", "severity": "mild"})
    assert bad.status_code == 422 and "Enter the substance, e.g. Penicillin." in text(bad)
    assert reception.post("/patients/1/allergies", data={"csrf_token": csrf(reception, "/patients/1"),
                                                         "substance": "Dust", "severity": "mild"}).status_code == 403


def test_viewer_sees_no_edit_form(reception, as_role):
    register_form(reception)
    page = as_role("lab_technician").get("/patients/1").get_data(as_text=True)
    assert "Ahmed Khan" in page and "Edit demographics" not in page


@pytest.mark.parametrize("role", ["housekeeping", "department_head"])
def test_pages_are_forbidden_without_patient_access(as_role, role):
    client = as_role(role)
    for url in ("/patients", "/patients/new", "/patients/1"):
        assert client.get(url).status_code == 403, url


def test_pages_send_anonymous_users_to_login(client):
    resp = client.get("/patients/new")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]
