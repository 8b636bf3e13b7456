"""The render_form macro (hms/web/templates/forms.html), rendered in a minimal Flask app."""

from __future__ import annotations

import copy
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from flask import Flask, jsonify, render_template_string, request
from werkzeug.datastructures import MultiDict

from hms.errors import Invalid
from hms.forms import coerce_form_post, field_list, form_from_dict, load_form, validate

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "hms" / "web" / "templates"
USE_MACRO = ('{% from "forms.html" import render_form %}'
             "{{ render_form(fields, values, errors, lookup_urls=lookup_urls) }}")

CLINIC = {
    "key": "clinic",
    "title": "Clinic note",
    "required": ["diagnoses", "follow_up_on"],
    "properties": {
        "gcs_motor": {"type": "integer", "title": "GCS motor", "enum": [1, 2, 3, 4, 5, 6],
                      "enumNames": ["None", "Extension", "Flexion", "Withdraws", "Localises", "Obeys"]},
        "severity": {"type": "string", "enum": ["mild", "severe"]},
        "admit": {"type": "boolean", "title": "Admit"},
        "follow_up_on": {"type": "string", "format": "date", "title": "Follow-up date"},
        "seen_at": {"type": "string", "format": "date-time", "title": "Seen at"},
        "diagnoses": {"type": "array", "title": "Diagnoses", "items": {"type": "string"}, "lookup": "icd10"},
        "medicines": {
            "type": "array", "title": "Medicines", "maxItems": 4,
            "items": {"type": "object", "required": ["name", "dose"], "properties": {
                "name": {"type": "string", "title": "Medicine", "lookup": "medicines"},
                "dose": {"type": "number", "title": "Dose", "exclusiveMinimum": 0, "x-unit": "mg"},
                "route": {"type": "string", "title": "Route", "enum": ["oral", "iv"]},
                "prn": {"type": "boolean", "title": "As needed"},
            }},
        },
        "bed_label": {"type": "string", "title": "Bed", "readOnly": True},
    },
}


@pytest.fixture
def app() -> Flask:
    return Flask(__name__, template_folder=str(TEMPLATES))


@pytest.fixture
def render(app):
    def do(defn, values=None, errors=None, lookup_urls=None) -> str:
        with app.test_request_context():
            return render_template_string(USE_MACRO, fields=field_list(defn), values=values,
                                          errors=errors, lookup_urls=lookup_urls or {})
    return do


@pytest.fixture
def triage():
    return load_form(ROOT / "forms" / "triage.json")


@pytest.fixture
def clinic():
    return form_from_dict(copy.deepcopy(CLINIC))


def tag(html: str, element_id: str) -> str:
    """The opening tag of the element with this id."""
    match = re.search(rf'<[a-z]+ [^>]*id="{re.escape(element_id)}"[^>]*>', html)
    assert match, f"no element with id {element_id}"
    return match.group(0)


def visible(html: str) -> str:
    """The HTML outside <template> elements (what the browser shows and submits)."""
    return re.sub(r"<template.*?</template>", "", html, flags=re.S)


def test_labels_help_units_and_required_markers(render, triage):
    html = render(triage)
    assert re.search(r'<label for="f-chief_complaint">Chief complaint<span class="required" '
                     r'aria-hidden="true"[^>]*> \*</span></label>', html)
    assert '<label for="f-pulse">Pulse</label>' in html  # optional: no marker
    complaint = tag(html, "f-chief_complaint")
    assert complaint.startswith("<textarea") and " required" in complaint and 'maxlength="500"' in complaint
    assert 'aria-describedby="f-chief_complaint-help"' in complaint
    assert '<div class="hint" id="f-chief_complaint-help">In the patient&#39;s words' in html
    temp = tag(html, "f-temperature_c")
    assert 'type="number"' in temp and 'step="any"' in temp and 'min="30"' in temp and 'max="45"' in temp
    assert '<span class="unit">°C</span>' in html
    assert 'Between 30 and 45 °C.' in html
    assert 'step="1"' in tag(html, "f-pulse")
    assert "aria-invalid" not in html


def test_errors_are_inline_and_marked_invalid(render, triage):
    html = render(triage, values={"pulse": "300", "chief_complaint": ""},
                  errors={"pulse": ["Must be between 20 and 250 beats/min."], "chief_complaint": ["Required."]})
    pulse = tag(html, "f-pulse")
    assert 'aria-invalid="true"' in pulse and 'value="300"' in pulse
    assert 'aria-describedby="f-pulse-help f-pulse-error"' in pulse
    assert '<div class="field-error" id="f-pulse-error">Must be between 20 and 250 beats/min.</div>' in html
    assert 'aria-invalid="true"' in tag(html, "f-chief_complaint")
    assert 'aria-invalid="true"' not in tag(html, "f-spo2")


def test_enums_render_as_select_or_radios_with_the_value_chosen(render, triage, clinic):
    html = render(clinic, values={"gcs_motor": 4, "severity": "severe"})
    assert tag(html, "f-gcs_motor").startswith("<select")
    assert '<option value="4" selected>Withdraws</option>' in html
    assert '<option value="3">Flexion</option>' in html
    assert '<option value="">—</option>' in html  # optional select can be cleared
    assert re.search(r'<input type="radio" name="severity" id="f-severity-1" value="severe" checked>', html)
    assert 'id="f-severity-none" value=""' in html  # optional radios can be cleared too
    priority = render(triage, values={"priority": "urgent"})
    assert re.search(r'<legend>Priority<span class="required"', priority)
    assert re.search(r'value="urgent" checked required>', priority)
    assert re.search(r'value="routine" required>', priority)
    assert "f-priority-none" not in priority
    # Posted values are strings: "4" selects the integer option too.
    assert '<option value="4" selected>' in render(clinic, values={"gcs_motor": "4"})


def test_boolean_date_datetime_and_read_only(render, clinic):
    html = render(clinic, values={"admit": True, "follow_up_on": "2024-06-01", "seen_at": "2024-05-01T10:30",
                                  "bed_label": "MW1-03"})
    admit = tag(html, "f-admit")
    assert 'type="checkbox"' in admit and " checked" in admit and 'value="on"' in admit
    assert '<label for="f-admit"' in html
    assert " checked" in tag(render(clinic, values={"admit": "on"}), "f-admit")
    assert " checked" not in tag(render(clinic, values={"admit": False}), "f-admit")
    assert 'type="date"' in tag(html, "f-follow_up_on") and 'value="2024-06-01"' in html
    assert 'type="datetime-local"' in tag(html, "f-seen_at") and 'value="2024-05-01T10:30"' in html
    assert re.search(r'<output id="f-bed_label">MW1-03</output>', html)
    assert 'name="bed_label"' not in html


def test_table_has_existing_rows_plus_two_blank_and_per_cell_errors(render, clinic):
    rows = [{"name": "ORS", "dose": "1", "route": "oral", "prn": True},
            {"name": "Zinc", "dose": "0", "route": "iv"}]
    html = render(clinic, values={"medicines": rows},
                  errors={"medicines": {1: {"dose": ["Must be greater than 0 mg."]}}})
    shown = visible(html)
    assert [int(i) for i in re.findall(r'name="medicines-(\d+)-name"', shown)] == [0, 1, 2, 3]
    assert '<th scope="col">Dose<span class="required"' in html and "(mg)</th>" in html
    assert 'value="ORS"' in tag(shown, "f-medicines-0-name")
    assert 'aria-label="Medicine, row 1"' in tag(shown, "f-medicines-0-name")
    assert " checked" in tag(shown, "f-medicines-0-prn")
    dose = tag(shown, "f-medicines-1-dose")
    assert 'aria-invalid="true"' in dose and 'aria-describedby="f-medicines-1-dose-error"' in dose
    assert '<div class="field-error" id="f-medicines-1-dose-error">Must be greater than 0 mg.</div>' in shown
    assert "aria-invalid" not in tag(shown, "f-medicines-0-dose")
    # Blank rows never carry `required`: an unused row must not block the submit.
    assert " required" not in tag(shown, "f-medicines-2-name")
    assert 'name="medicines-__index__-dose"' in html and 'aria-label="Dose, row __row__"' in html
    assert re.search(r'<button type="button" class="secondary" data-add-row="f-medicines" '
                     r'data-max-rows="4" hidden>Add row</button>', html)
    assert 'document.addEventListener("click"' in html


def test_rows_are_capped_by_max_items_and_errors_survive_a_json_round_trip(render, clinic):
    rows = [{"name": f"m{i}", "dose": "1"} for i in range(3)]
    html = visible(render(clinic, values={"medicines": rows},
                          errors={"medicines": {"2": {"name": ["Unknown medicine: m2."]}}}))
    assert len(re.findall(r'name="medicines-\d+-name"', html)) == 4
    assert 'aria-invalid="true"' in tag(html, "f-medicines-2-name")
    listed = render(clinic, errors={"medicines": ["Must have at most 4 rows."]})
    assert '<div class="field-error" id="f-medicines-error">Must have at most 4 rows.</div>' in listed


def test_lookups_get_a_datalist_fed_from_the_given_url(render, clinic):
    html = render(clinic, values={"diagnoses": ["A09"]},
                  lookup_urls={"icd10": "/lookups/icd10", "medicines": "/lookups/medicines?active=1"})
    shown = visible(html)
    first = tag(shown, "f-diagnoses-0")
    assert 'value="A09"' in first and 'list="f-diagnoses-0-options"' in first
    assert 'data-lookup-url="/lookups/icd10"' in first and 'autocomplete="off"' in first
    assert '<datalist id="f-diagnoses-0-options"></datalist>' in shown
    assert len(re.findall(r'name="diagnoses"', shown)) == 3  # one item + 2 blank
    assert 'data-lookup-url="/lookups/medicines?active=1"' in tag(shown, "f-medicines-0-name")
    assert "setTimeout(function () { suggest(input); }, 200)" in html
    assert "encodeURIComponent(q)" in html and "fetch(url" in html


def test_lookups_without_a_url_are_plain_inputs(render, clinic):
    html = render(clinic)
    assert "data-lookup-url" not in html and "<datalist" not in html and "suggest(input)" not in html


def test_values_are_escaped(render, triage):
    html = render(triage, values={"chief_complaint": "<script>alert(1)</script>"})
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


# ---- the round trip: render, fill in as a browser would, post, coerce, validate ----------------

class _Fields(HTMLParser):
    """Collects what a browser would submit: named inputs outside <template>."""

    def __init__(self):
        super().__init__()
        self.pairs: list[tuple[str, str]] = []
        self._template = 0
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, name, attrs):
        a = dict(attrs)
        if name == "template":
            self._template += 1
        if self._template or "name" not in a:
            return
        if name == "input" and a.get("type") in ("checkbox", "radio"):
            if "checked" in a:
                self.pairs.append((a["name"], a.get("value", "on")))
        elif name == "input":
            self.pairs.append((a["name"], a.get("value", "")))
        elif name == "select":
            self._select = a["name"]
        elif name == "textarea":
            self._textarea = a["name"]
            self.pairs.append((a["name"], ""))
        if name == "option" and self._select and "selected" in a:
            self.pairs.append((self._select, a.get("value", "")))

    def handle_startendtag(self, name, attrs):
        self.handle_starttag(name, attrs)

    def handle_endtag(self, name):
        if name == "template":
            self._template -= 1
        elif name == "select":
            self._select = None
        elif name == "textarea":
            self._textarea = None

    def handle_data(self, data):
        if self._textarea and not self._template:
            key, text = self.pairs[-1]
            self.pairs[-1] = (key, text + data)


def submitted(html: str, **changes) -> MultiDict:
    parser = _Fields()
    parser.feed(html)
    post = MultiDict(parser.pairs)
    for name, value in changes.items():
        post.setlist(name, value if isinstance(value, list) else [value])
    return post


@pytest.fixture
def task_app(app, clinic):
    @app.route("/task", methods=["GET", "POST"])
    def task():
        values, errors = {}, {}
        if request.method == "POST":
            values = coerce_form_post(clinic, request.form)
            try:
                return jsonify(validate(clinic, values))
            except Invalid as exc:
                errors = exc.fields
        return render_template_string("<form method=post>" + USE_MACRO + "</form>", fields=field_list(clinic),
                                      values=values, errors=errors, lookup_urls={}), (422 if errors else 200)
    return app


def test_a_browser_post_round_trips_through_coerce_and_validate(task_app):
    client = task_app.test_client()
    page = client.get("/task").get_data(as_text=True)
    post = submitted(page, **{"diagnoses": ["A09", ""], "follow_up_on": "2024-06-01", "admit": "on",
                              "medicines-0-name": "ORS", "medicines-0-dose": "1",
                              "medicines-1-name": "Zinc", "medicines-1-dose": "0"})
    refused = client.post("/task", data=post)
    assert refused.status_code == 422
    html = visible(refused.get_data(as_text=True))
    assert 'aria-invalid="true"' in tag(html, "f-medicines-1-dose")
    assert "Must be greater than 0 mg." in html
    assert 'value="Zinc"' in tag(html, "f-medicines-1-name") and " checked" in tag(html, "f-admit")
    fixed = submitted(html, **{"medicines-1-dose": "20", "medicines-1-prn": "on"})
    accepted = client.post("/task", data=fixed)
    assert accepted.status_code == 200, accepted.get_data(as_text=True)
    assert accepted.get_json() == {
        "gcs_motor": None, "severity": None, "admit": True, "follow_up_on": "2024-06-01", "seen_at": None,
        "diagnoses": ["A09"],
        "medicines": [{"name": "ORS", "dose": 1.0, "route": None, "prn": False},
                      {"name": "Zinc", "dose": 20.0, "route": None, "prn": True}],
    }
