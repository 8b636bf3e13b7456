"""The pathway editor in Chromium: a department head adds a Consent step to fixture_visit
with bpmn-js, sees the lint's marker on it, fixes it in the side panel, saves and publishes."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from hms.audit import Actor
from hms.workflow import editor, specs

pytestmark = pytest.mark.browser


@pytest.fixture
def fixture_pathways(app, database):
    """The fixture pathways published as the workflow tests do (lint included), with their
    test operation registered."""
    import tests.workflow.conftest as workflow_fixtures  # registers the fixture.record operation

    with database.transaction() as s:
        specs.sync_shipped(s, workflow_fixtures.FIXTURES, Actor.system("test"))
    yield


@pytest.fixture
def head_of_outpatients(fixture_pathways, database, make_department, make_user):
    dep = make_department("OPD", "Outpatients")
    with database.transaction() as s:
        editor.assign_owner(s, Actor.system("test"), "fixture_visit", dep)
    make_user("sadia", "department_head", department_ids=[dep], full_name="Dr Sadia Malik")
    return "sadia"


ADD_CONSENT = """() => {
  const m = window.hmsModeler;
  const reg = m.get('elementRegistry'), modeling = m.get('modeling');
  const factory = m.get('elementFactory'), bpmnFactory = m.get('bpmnFactory'), moddle = m.get('moddle');
  const triage = reg.get('triage'), gw = reg.get('gw_lab');
  const gwCentre = gw.x + gw.width / 2;
  // Make room: everything from the lab gateway rightwards moves one column right.
  const right = reg.filter(e => !e.waypoints && e.type !== 'label' && e.x >= gw.x - 5 &&
                                !['bpmn:Participant', 'bpmn:Lane'].includes(e.type));
  modeling.moveElements(right, { x: 160, y: 0 });
  // A user task whose form does not exist yet (the head named it before creating it).
  const bo = bpmnFactory.create('bpmn:UserTask', { id: 'consent', name: 'Consent' });
  bo.extensionElements = moddle.create('bpmn:ExtensionElements', { values: [
    moddle.create('spiffworkflow:Properties', { properties: [
      moddle.create('spiffworkflow:Property', { name: 'formKey', value: 'consent_form' })] })] });
  const shape = factory.createShape({ type: 'bpmn:UserTask', businessObject: bo });
  const pool = reg.filter(e => e.type === 'bpmn:Participant')[0];
  modeling.createShape(shape, { x: gwCentre + 20, y: triage.y + triage.height / 2 }, pool);
  // Connect it: Triage -> Consent -> lab gateway.
  const f2 = reg.get('f2');
  modeling.reconnectEnd(f2, shape, { x: shape.x, y: shape.y + shape.height / 2 });
  modeling.connect(shape, reg.get('gw_lab'));
  const lane = reg.get('lane_nurse').businessObject;
  return { id: shape.id, inNurseLane: (lane.flowNodeRef || []).some(n => n.id === 'consent') };
}"""


def test_head_adds_a_step_fixes_the_lint_problem_in_the_panel_and_publishes(page, live_server, log_in, shot,
                                                                          head_of_outpatients, database):
    log_in(head_of_outpatients)
    page.goto("/pathways")
    card = page.locator("#pathway-fixture_visit")
    expect(card).to_contain_text("Fixture visit")
    expect(card).to_contain_text("Outpatients")
    shot("pathway-list")

    card.get_by_role("link", name="Edit").click()
    expect(page).to_have_url(re.compile(r"/pathways/fixture_visit/edit$"))
    expect(page.locator("body[data-editor-ready=true]")).to_have_count(1)
    # The fixture has no diagram of its own: HMS laid it out, and bpmn-js drew it.
    for element_id in ("start", "triage", "gw_lab", "collect", "consult", "record", "end", "lane_nurse"):
        expect(page.locator(f'.djs-element[data-element-id="{element_id}"]')).to_have_count(1)
    expect(page.locator(".djs-palette")).to_be_visible()
    expect(page.get_by_role("link", name="← Pathways")).to_have_attribute("href", "/pathways")
    shot("editor-opened")

    added = page.evaluate(ADD_CONSENT)
    assert added == {"id": "consent", "inNurseLane": True}
    page.get_by_role("button", name="Save draft").click()
    status = page.locator("#editor-status")
    expect(status).to_contain_text("1 problem")
    consent = page.locator('.djs-element[data-element-id="consent"]')
    expect(consent).to_have_class(re.compile(r"hms-lint-error"))
    expect(page.locator('.hms-lint-badge[data-element-id="consent"]')).to_be_visible()
    problem = page.locator("#problem-list li")
    expect(problem).to_have_count(1)
    expect(problem).to_contain_text("consent_form")
    shot("lint-marker-on-new-step")

    # Open the element from the problem list; the side panel shows its fields.
    problem.get_by_role("button").click()
    expect(page.locator("#panel-title")).to_have_text("User Task")
    name = page.locator("#hms-name")
    expect(name).to_have_value("Consent")
    # The panel's fields are reachable with Tab: from the name to the form.
    name.focus()
    form_select = page.locator("#hms-form-select")
    for _ in range(6):
        if form_select.evaluate("el => el === document.activeElement"):
            break
        page.keyboard.press("Tab")
    expect(form_select).to_be_focused()
    form_select.select_option("review")
    shot("panel-form-chosen")

    page.get_by_role("button", name="Save draft").click()
    expect(status).to_have_text("Draft saved: it passes every check.")
    expect(consent).not_to_have_class(re.compile(r"hms-lint-error"))
    expect(page.locator(".hms-lint-badge")).to_have_count(0)
    expect(page.locator("#diff-body")).to_contain_text("Consent")

    page.get_by_label("Note for the version").fill("Consent before the lab decision")
    page.get_by_role("button", name="Publish").click()
    expect(status).to_contain_text("Published as version 2")
    shot("published")

    versions = page.request.get(f"{live_server.url}/api/v1/pathways/fixture_visit/versions").json()
    assert [v["version"] for v in versions["versions"]] == [1, 2]
    v2 = versions["versions"][-1]
    assert v2["note"] == "Consent before the lab decision" and v2["published_by"] == "sadia"
    assert v2["forms"] == {"triage": 1, "review": 1}
    assert versions["draft"] is None
    xml = page.request.get(f"{live_server.url}/api/v1/pathways/fixture_visit/versions/2").json()["bpmn_xml"]
    described = editor.describe_elements(xml)
    assert described["consent"] == {"type": "userTask", "name": "Consent", "lane": "Nurse", "form": "review"}
    assert described["f2"]["target"] == "consent"
    assert any(d.get("source") == "consent" and d.get("target") == "gw_lab" for d in described.values())
    # The service task's operator and parameters went through bpmn-js unchanged.
    assert described["record"]["operation"] == "fixture.record"
    assert described["record"]["parameters"] == {"patient_id": "patient_id", "note": "'visit for ' + str(patient_id)"}
    assert described["f_lab"]["condition"] == "needs_lab == True"

    page.get_by_role("link", name="← Pathways").click()
    expect(page.locator("#pathway-fixture_visit")).to_contain_text("Consent before the lab decision")


def test_live_condition_check_in_the_panel(page, log_in, head_of_outpatients, shot):
    log_in(head_of_outpatients)
    page.goto("/pathways/fixture_visit/edit")
    expect(page.locator("body[data-editor-ready=true]")).to_have_count(1)
    page.evaluate("() => { const m = window.hmsModeler; m.get('selection').select(m.get('elementRegistry').get('gw_lab')); }")
    expect(page.locator("#panel-title")).to_have_text("Exclusive Gateway")
    condition = page.get_by_label("Condition").first
    expect(condition).to_have_value("needs_lab == True")
    condition.fill("__import__('os').system('id') == 0")
    expect(page.locator(".panel .check.error").first).to_be_visible()
    expect(condition).to_have_attribute("aria-invalid", "true")
    condition.fill("needs_lab == True and pulse > 100")
    expect(page.locator(".panel .check.ok").first).to_have_text("Checked: valid.")
    shot("gateway-condition")


def test_form_editor_previews_as_you_type(page, log_in, head_of_outpatients, shot):
    log_in(head_of_outpatients)
    page.goto("/forms/review")
    preview = page.locator("#preview")
    expect(preview.get_by_text("I have reviewed this record")).to_be_visible()
    expect(page.locator("#preview-status")).to_contain_text("The form is valid")
    schema = page.locator("#schema")
    text = schema.input_value()
    schema.fill(text.replace('"Comments"', '"Comments for the doctor"'))
    expect(preview.get_by_text("Comments for the doctor")).to_be_visible()
    schema.fill(text.replace('"type": "boolean"', '"type": "flaot"'))
    expect(page.locator("#preview-problems")).to_contain_text("flaot")
    expect(schema).to_have_attribute("aria-invalid", "true")
    shot("form-problem")
    schema.fill(text.replace('"Comments"', '"Comments for the doctor"'))
    expect(preview.get_by_text("Comments for the doctor")).to_be_visible()
    page.get_by_label("Note").fill("clearer label")
    page.get_by_role("button", name="Save as a new version").click()
    expect(page.get_by_role("status")).to_contain_text("Form review version 2 saved")
    expect(page.locator("table")).to_contain_text("clearer label")
    shot("form-saved")


def test_saving_unchanged_in_the_editor_changes_nothing_the_pathway_does(page, log_in, make_user, shipped_pathways,
                                                                         fixture_pathways, live_server, database):
    """A round trip through bpmn-js keeps every SpiffWorkflow extension (forms, operators and
    parameters, properties, instructions, scripts, conditions, timers, messages)."""
    make_user("root", "admin")
    log_in("root")
    with database.transaction(readonly=True) as s:
        keys = sorted({v.key for v in specs.list_versions(s)})
    assert {"fixture_visit", "fixture_ward_round", "fixture_caller", "fixture_callee"} <= set(keys)
    for key in keys:
        page.goto(f"/pathways/{key}/edit")
        expect(page.locator("body[data-editor-ready=true]")).to_have_count(1)
        page.get_by_role("button", name="Save draft").click()
        expect(page.locator("#editor-status")).to_contain_text("Draft saved")
        diff = page.request.get(f"{live_server.url}/api/v1/pathways/{key}/diff").json()
        assert (key, diff["added"], diff["removed"], diff["changed"]) == (key, [], [], []), diff
        # What the checks say about the saved draft is what they say about the published file.
        draft = page.request.get(f"{live_server.url}/api/v1/pathways/{key}/draft").json()
        with database.transaction(readonly=True) as s:
            before = editor.lint_draft(s, key, specs.latest_version(s, key).bpmn_xml)
        assert sorted((p["code"], p["element_id"]) for p in draft["problems"]) == \
            sorted((p.code, p.element_id) for p in before)


def test_migration_page_previews_and_moves_the_safe_instances(page, log_in, head_of_outpatients, database,
                                                              make_user, shot):
    from hms.patients.services import register_patient
    from hms.workflow import engine, queue, taskforms
    from tests.workflow.conftest import actor_of
    from tests.workflow.test_editor_api import with_consent

    make_user("rec", "reception")
    make_user("nurse", "nurse")
    with database.transaction() as s:
        patient = register_patient(s, Actor.system("test"), {
            "name": "Bilal Ahmed", "sex": "male", "date_of_birth": "1988-04-12", "cnic": "35202-1234567-1",
            "mobile": "0300-1234567", "relation": "S/O", "guardian_name": "Ahmed Khan", "city": "Lahore"}).id
    ids = []
    for _ in range(2):
        with database.transaction() as s:
            ids.append(engine.start_pathway(s, actor_of(database, "rec"), "fixture_visit", patient_id=patient,
                                            data={"needs_lab": False}).instance.id)
    with database.transaction() as s:  # the second visit is past triage
        item = queue.open_items_of(s, ids[1])[0]
        vitals = {"temperature_c": 37.2, "pulse": 80, "systolic_bp": 120, "diastolic_bp": 80, "respiratory_rate": 16,
                  "spo2": 98, "weight_kg": 70, "height_cm": 170, "chief_complaint": "Fever", "priority": "routine"}
        assert engine.complete_task(s, actor_of(database, "nurse"), item.id, vitals,
                                    validate=lambda k, d: taskforms.validate(s, k, d)).ok
    with database.transaction() as s:
        head = actor_of(database, head_of_outpatients)
        editor.save_draft(s, head, "fixture_visit", with_consent())
        editor.publish_draft(s, head, "fixture_visit", "Consent after triage")

    log_in(head_of_outpatients)
    page.goto("/pathways/fixture_visit")
    expect(page.get_by_role("heading", name="Running instances")).to_be_visible()
    shot("pathway-page")
    page.locator("select[name=from_version]").select_option("1")
    page.locator("select[name=to_version]").select_option("2")
    page.get_by_role("button", name="Preview the migration").click()
    rows = page.locator("table.migration tbody tr")
    expect(rows).to_have_count(2)
    expect(page.locator("table.migration tr.unsafe")).to_contain_text("is completed and version 2 changed")
    shot("migration-preview")
    page.get_by_role("button", name="Migrate 1 safe instance").click()
    expect(page.get_by_role("status").first).to_contain_text("1 instance moved to v2")
    shot("migration-done")
    with database.transaction(readonly=True) as s:
        from hms.workflow.models import ProcessInstance

        assert [s.get(ProcessInstance, i).version for i in ids] == [2, 1]


def test_panel_sets_timer_durations_and_service_parameters(page, log_in, make_user, fixture_pathways, live_server,
                                                          shot):
    make_user("root", "admin")
    log_in("root")
    select = "(id) => { const m = window.hmsModeler; m.get('selection').select(m.get('elementRegistry').get(id)); }"

    page.goto("/pathways/fixture_ward_round/edit")
    expect(page.locator("body[data-editor-ready=true]")).to_have_count(1)
    page.evaluate(select, "wait")
    time = page.get_by_label("Time")
    expect(time).to_have_value("PT2H")  # shown without the quotes the engine needs
    time.fill("PT3H")
    time.press("Tab")
    page.get_by_role("button", name="Save draft").click()
    expect(page.locator("#editor-status")).to_have_text("Draft saved: it passes every check.")
    xml = page.request.get(f"{live_server.url}/api/v1/pathways/fixture_ward_round/draft").json()["bpmn_xml"]
    assert editor.describe_elements(xml)["wait"]["timer"] == 'timeDuration "PT3H"'

    page.goto("/pathways/fixture_visit/edit")
    expect(page.locator("body[data-editor-ready=true]")).to_have_count(1)
    page.evaluate(select, "record")
    expect(page.get_by_label("Operation")).to_have_value("fixture.record")
    note = page.get_by_label("note", exact=True)
    expect(note).to_have_value("'visit for ' + str(patient_id)")
    note.fill("'seen: ' + str(patient_id)")
    note.press("Tab")
    expect(page.locator(".panel .check.ok").last).to_have_text("Checked: valid.")
    page.get_by_label("Result variable").fill("recorded")
    page.get_by_label("Result variable").press("Tab")
    shot("service-task-panel")
    page.get_by_role("button", name="Save draft").click()
    expect(page.locator("#editor-status")).to_have_text("Draft saved: it passes every check.")
    diff = page.request.get(f"{live_server.url}/api/v1/pathways/fixture_visit/diff").json()
    assert diff["changed"] == [{"id": "record", "type": "serviceTask", "name": "Record the visit", "changes": [
        {"field": "result_variable", "label": "operation result variable", "old": "record_result", "new": "recorded"},
        {"field": "parameters", "label": "operation parameters",
         "old": {"patient_id": "patient_id", "note": "'visit for ' + str(patient_id)"},
         "new": {"patient_id": "patient_id", "note": "'seen: ' + str(patient_id)"}}]}]
