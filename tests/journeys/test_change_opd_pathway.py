"""The head of General Medicine adds a step to the real OPD visit through the editor's API,
publishes it, and new visits follow it while a running visit finishes on its version."""

from __future__ import annotations

from pathlib import Path

from lxml import etree

from hms.audit import Actor
from tests.conftest import login
from tests.journeys.test_opd_visit import TRIAGE, check_in, complete, only_task, pay_fee_and_triage

BPMN = "http://www.omg.org/spec/BPMN/20100524/MODEL"
SPIFF = "http://spiffworkflow.org/bpmn/schema/1.0/core"
NS = {"bpmn": BPMN}


def with_consent_after_triage(xml: str) -> str:
    """Insert a nurse's 'Consent' user task (form 'review') between recording the vitals and
    the consultation, as the editor would save it."""
    root = etree.fromstring(xml.encode())
    process = root.find("bpmn:process[@id='opd_visit']", NS)
    flow = process.find("bpmn:sequenceFlow[@sourceRef='record_triage'][@targetRef='consult']", NS)
    flow.set("targetRef", "consent")
    consult = process.find("bpmn:userTask[@id='consult']", NS)
    for incoming in consult.findall("bpmn:incoming", NS):
        if incoming.text == flow.get("id"):
            incoming.text = "f_consent_consult"
    task = etree.SubElement(process, f"{{{BPMN}}}userTask", id="consent", name="Consent for examination")
    ext = etree.SubElement(task, f"{{{BPMN}}}extensionElements")
    props = etree.SubElement(ext, f"{{{SPIFF}}}properties")
    etree.SubElement(props, f"{{{SPIFF}}}property", name="formKey", value="review")
    etree.SubElement(task, f"{{{BPMN}}}incoming").text = flow.get("id")
    etree.SubElement(task, f"{{{BPMN}}}outgoing").text = "f_consent_consult"
    etree.SubElement(process, f"{{{BPMN}}}sequenceFlow", id="f_consent_consult", sourceRef="consent",
                     targetRef="consult")
    nurse_lane = process.find(".//bpmn:lane[@name='Nurse']", NS)
    etree.SubElement(nurse_lane, f"{{{BPMN}}}flowNodeRef").text = "consent"
    return etree.tostring(root, encoding="unicode")


def test_head_of_medicine_adds_a_consent_step_new_visits_follow_it(app, clinic, patient, database, make_user):
    from hms.workflow import editor

    with database.transaction() as s:
        editor.assign_owner(s, Actor.system("test"), "opd_visit", clinic["department_id"])
    make_user("head_gm", "department_head", department_ids=[clinic["department_id"]])
    head = app.test_client()
    login(head, "head_gm")
    running = check_in(clinic, patient)  # a visit already under way on version 1

    xml = with_consent_after_triage((Path(app.root_path).parent / "workflows" / "opd_visit.bpmn").read_text())
    saved = head.put("/api/v1/pathways/opd_visit/draft", data=xml, content_type="application/xml")
    assert saved.status_code == 200 and saved.get_json()["publishable"], saved.get_json()
    diff = head.get("/api/v1/pathways/opd_visit/diff").get_json()
    assert "consent" in str(diff["added"])
    published = head.post("/api/v1/pathways/opd_visit/publish", json={"note": "Consent before examination"})
    assert published.status_code == 201 and published.get_json()["version"] == 2
    assert clinic["doc"].post("/api/v1/pathways/opd_visit/publish", json={"note": "x"}).status_code == 403

    # The running visit keeps version 1: triage leads straight to the consultation.
    pay_fee_and_triage(clinic)
    assert only_task(clinic["doc"], "consult")["instance_id"] == running["instance_id"]

    # A new visit follows version 2: the nurse takes consent after triage.
    second = clinic["rec"].post("/api/v1/patients", json={
        "name": "Ayesha Bibi", "sex": "female", "age_years": 30, "mobile": "0321-7654321", "city": "Lahore"}).get_json()
    visit = check_in(clinic, second)
    fee = [t for t in clinic["cash"].get("/api/v1/tasks").get_json()["items"] if t["instance_id"] == visit["instance_id"]]
    bill_id = clinic["cash"].get(f"/api/v1/tasks/{fee[0]['id']}").get_json()["values"]["_context"]["bill"]["bill_id"]
    bill = clinic["cash"].get(f"/api/v1/bills/{bill_id}").get_json()
    import uuid

    clinic["cash"].post(f"/api/v1/bills/{bill_id}/payments", json={"amount_paisa": bill["balance_paisa"], "method": "cash"},
                        headers={"Idempotency-Key": str(uuid.uuid4())})
    complete(clinic["cash"], fee[0], {"payment_taken": True})
    triage = [t for t in clinic["nurse"].get("/api/v1/tasks").get_json()["items"] if t["task"] == "triage"][0]
    complete(clinic["nurse"], triage, TRIAGE)
    consent = only_task(clinic["nurse"], "consent")
    assert consent["instance_id"] == visit["instance_id"]
    versions = {i["id"]: i["version"] for i in
                (clinic["doc"].get(f"/api/v1/process-instances/{n}").get_json() for n in
                 (running["instance_id"], visit["instance_id"]))}
    assert versions == {running["instance_id"]: 1, visit["instance_id"]: 2}
