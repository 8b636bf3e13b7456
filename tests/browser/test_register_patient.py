"""A receptionist registers a patient through the real pages, in Chromium.

The form is filled the way a receptionist does it at the counter: type a value, Tab to the
next field, and Enter to submit. Fields are visited in the order the page lays them out, so
the test checks that keyboard navigation reaches every field without pinning the layout.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select

pytestmark = pytest.mark.browser

# An adult woman registered with her date of birth (not an age: the form refuses both).
PATIENT = {
    "name": "Ayesha Khan",
    "relation": "D/O",
    "guardian_name": "Imran Khan",
    "sex": "female",
    "date_of_birth": "14-03-1990",  # typed day first, as receptionists write dates
    "cnic": "12345",  # wrong on purpose: 5 digits where 13 are needed
    "mobile": "0300-1234567",
    "address": "House 12, Street 4, Model Town",
    "city": "Lahore",
    "allergy_substance_1": "Penicillin",
    "allergy_reaction_1": "Rash",
    "allergy_severity_1": "moderate",
}
GOOD_CNIC = "35202-1234567-4"
MAX_TABS_BETWEEN_FIELDS = 15


def _focused_name(page) -> str | None:
    return page.evaluate("() => document.activeElement && document.activeElement.getAttribute('name')")


def _tab_to(page, name: str) -> None:
    """Press Tab until the field `name` has the focus; fail if the keyboard cannot reach it."""
    for _ in range(MAX_TABS_BETWEEN_FIELDS):
        if _focused_name(page) == name:
            return
        page.keyboard.press("Tab")
    assert _focused_name(page) == name, f"Tab never reached the {name!r} field"


def _enter_value(page, name: str, value: str) -> None:
    """Put `value` into the focused field `name` as a person would."""
    kind = page.evaluate("() => [document.activeElement.tagName, document.activeElement.type || '']")
    field = page.locator(f"[name={name}]")
    if kind[0] == "SELECT":
        # Type-ahead on a closed <select> is platform-specific; choosing the option is
        # what the keyboard user ends up doing, and it fires the same change event.
        page.locator(f"select[name={name}]").select_option(value)
    elif kind[1] == "radio":
        field.and_(page.locator(f"[value='{value}']")).check()
    elif kind[1] == "date":
        # A date input's typed format follows the browser locale; fill() sets the ISO value.
        page.locator(f"input[name={name}]").fill(value)
    else:
        page.keyboard.type(value)


def _fill_form_with_keyboard(page, values: dict[str, str]) -> None:
    # The page's own order of the fields we fill (some fields, like age, stay empty).
    dom_order = page.eval_on_selector_all("main form [name]", "els => els.map(e => e.getAttribute('name'))")
    missing = [n for n in values if n not in dom_order]
    assert not missing, f"registration form lacks fields {missing}"
    ordered = [n for n in dict.fromkeys(dom_order) if n in values]
    page.locator(f"[name={ordered[0]}]").first.focus()
    for name in ordered:
        _tab_to(page, name)
        _enter_value(page, name, values[name])


def _expect_kept(page, name: str, value: str) -> None:
    radios = page.locator(f"input[type=radio][name={name}]")
    if radios.count():
        expect(radios.and_(page.locator(f"[value='{value}']")), f"{name} was not kept").to_be_checked()
    else:
        expect(page.locator(f"[name={name}]"), f"{name} was not kept").to_have_value(value)


def _patient_count(database) -> int:
    from hms.patients.models import Patient

    with database.transaction(readonly=True) as s:
        return s.execute(select(func.count()).select_from(Patient)).scalar_one()


def test_reception_registers_patient_with_keyboard(page, live_server, make_user, log_in, shot, database):
    make_user("rabia", "reception", full_name="Rabia Saleem")
    log_in("rabia")

    response = page.goto("/patients/new")
    assert response is not None and response.status == 200, "the registration page /patients/new is missing"
    # Reception reaches the same page from the top bar.
    expect(page.locator("header.topbar").get_by_role("link", name="Register")).to_have_attribute(
        "href", "/patients/new")
    shot("empty-form")

    _fill_form_with_keyboard(page, PATIENT)
    shot("filled-bad-cnic")
    cnic = page.locator("input[name=cnic]")
    cnic.press("Enter")

    # Refused: the CNIC error shows next to the field, and nothing typed is lost.
    expect(page.get_by_text("CNIC must be 13 digits")).to_be_visible()
    expect(cnic).to_have_attribute("aria-invalid", "true")
    for name, value in PATIENT.items():
        _expect_kept(page, name, value)
    expect(page.get_by_text("HMS-000001")).to_have_count(0)
    assert _patient_count(database) == 0
    shot("bad-cnic-refused")

    cnic.focus()
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type(GOOD_CNIC)
    page.keyboard.press("Enter")

    expect(page).to_have_url(re.compile(r"/patients/\d+$"))
    expect(page.get_by_role("status").filter(has_text="Registered HMS-000001")).to_be_visible()
    main = page.locator("main")
    expect(main).to_contain_text("HMS-000001")
    expect(main).to_contain_text("Ayesha Khan")
    # The allergy recorded at registration must be in sight on the patient's page.
    expect(main).to_contain_text("Penicillin")
    assert _patient_count(database) == 1
    shot("patient-page")
