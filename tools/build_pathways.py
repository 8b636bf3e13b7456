"""Generate the shipped pathways: `python -m tools.build_pathways` writes workflows/*.bpmn.

Task data carries ids and small decision values; each service task calls an operation of
one department (DESIGN.md section 2), and the pathway moves the results between them.
"""

from __future__ import annotations

from pathlib import Path

from tools.bpmn_builder import Process

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"


def lab_order() -> Process:
    """Sample collection -> results -> verification by another person -> doctor's review."""
    p = Process("lab_order", "Lab order", ["Lab Technician", "Pathologist", "Doctor"])
    LT, PA, DR = "Lab Technician", "Pathologist", "Doctor"
    p.start("start", "Tests ordered", LT)
    p.user("collect", "Collect sample", LT, form="lab_collect", var="collection", scope="none", due_in="PT1H",
           show="lab_order,collection_result",
           instructions="Label the tube with the sample number and record the collection, or reject the sample with a reason.")
    p.service("record_collection", "Record collection", LT, op="lab.record_collection",
              params={"order_id": "lab_order['order_id']", "collected": "collection['collected']",
                      "rejection_reason": "collection.get('rejection_reason')"}, result="collection_result")
    p.xor("gw_collected", "Sample accepted?", LT)
    p.service("result_rows", "Result rows", LT, op="lab.result_rows",
              params={"order_id": "lab_order['order_id']"}, result="results")
    p.service("result_sheet", "Result sheet", LT, op="lab.result_sheet",
              params={"order_id": "lab_order['order_id']"}, result="result_sheet")
    p.user("enter", "Enter results", LT, form="lab_results", var="result_entry", scope="none", due_in="PT4H",
           show="result_sheet,entry_result,verify_result",
           instructions="One row per analyte, in the order of the result sheet above.")
    p.service("save_results", "Save results", LT, op="lab.enter_results",
              params={"order_id": "lab_order['order_id']", "results": "result_entry['results']"}, result="entry_result")
    p.xor("gw_entered", "All results in?", LT)
    p.user("verify", "Verify results", PA, form="lab_verify", var="verification", scope="none", due_in="PT2H",
           show="lab_order,verify_result",
           instructions="Another pathologist must verify results you entered yourself.")
    p.service("verify_results", "Record verification", PA, op="lab.verify",
              params={"order_id": "lab_order['order_id']", "approve": "verification['approve']",
                      "comment": "verification.get('comment')"}, result="verify_result")
    p.xor("gw_verified", "Verified?", PA)
    p.user("review", "Review lab results", DR, form="lab_review", var="lab_review", assign_to="=doctor_id",
           show="lab_order", priority="=1 if verify_result.get('critical') else 3",
           instructions="The report is ready: review it and decide what happens next.")
    p.end("end", "Results reviewed", DR)

    p.chain("start", "collect", "record_collection", "gw_collected")
    p.flow("gw_collected", "result_rows", "collection_result['ok'] == True", name="accepted")
    p.flow("gw_collected", "collect", default=True, name="recollect")
    p.chain("result_rows", "result_sheet", "enter", "save_results", "gw_entered")
    p.flow("gw_entered", "verify", "entry_result['ok'] == True and entry_result['complete'] == True", name="complete")
    p.flow("gw_entered", "enter", default=True, name="fix or finish")
    p.chain("verify", "verify_results", "gw_verified")
    p.flow("gw_verified", "review", "verify_result['verified'] == True", name="verified")
    p.flow("gw_verified", "verify", "verify_result.get('problem') in ('same_person', 'not_pathologist')",
           name="another pathologist")
    p.flow("gw_verified", "enter", default=True, name="sent back")
    p.chain("review", "end")
    return p


def opd_visit() -> Process:
    """Check-in -> (fee) -> triage -> consultation -> lab and pharmacy -> payment."""
    lanes = ["Reception", "Cashier", "Nurse", "Doctor", "Lab Technician", "Pharmacist"]
    p = Process("opd_visit", "OPD visit", lanes)
    RC, CA, NU, DR, LT, PH = lanes
    p.start("start", "Patient checked in", RC)
    p.service("open_bill", "Open the visit bill", RC, op="finance.open_bill",
              params={"patient_id": "patient_id", "encounter_id": "encounter_id", "payer_class": "payer_class"},
              result="bill")
    p.service("consult_fee", "Charge the consultation", RC, op="finance.post_consultation_charge",
              params={"bill_id": "bill['bill_id']", "encounter_id": "encounter_id",
                      "department_code": "department_code", "doctor_id": "doctor_id"}, result="consult_charge")
    p.service("fee_rule", "Fee before consultation?", RC, op="finance.fee_before_consultation", params={},
              result="fee_rule")
    p.xor("gw_fee", "Pay first?", RC)
    p.user("collect_fee", "Collect consultation fee", CA, form="payment_check", var="fee_payment", scope="none",
           show="bill,consult_charge,fee_status",
           instructions="Take the consultation fee on the bill, then confirm here.")
    p.service("fee_status", "Check the fee is paid", CA, op="finance.bill_status",
              params={"bill_id": "bill['bill_id']"}, result="fee_status")
    p.xor("gw_fee_paid", "Fee paid?", CA)
    p.xor("gw_fee_join", "", NU)
    p.user("triage", "Triage", NU, form="triage", var="triage", due_in="PT30M",
           instructions="Record the vitals and the chief complaint.")
    p.service("record_triage", "Record vitals", NU, op="opd.record_triage",
              params={"encounter_id": "encounter_id", "vitals": "triage"}, result="triage_result")
    p.user("consult", "Consultation", DR, form="consultation", var="consultation", due_in="PT1H",
           assign_to="=doctor_id", priority="=triage_result['priority']", show="triage,triage_result,allergy_check",
           instructions="If an allergy alert is shown, remove the medicine or give an override reason.")
    p.service("allergy_check", "Check allergies", DR, op="inventory.check_allergies",
              params={"patient_id": "patient_id",
                      "item_codes": "[m['item_code'] for m in consultation.get('prescriptions') or []]"},
              result="allergy_check")
    p.xor("gw_allergy", "Allergy alert unresolved?", DR)
    p.service("save_consult", "Sign the consultation", DR, op="opd.save_consultation",
              params={"encounter_id": "encounter_id", "consultation": "consultation",
                      "allergy_alerts": "allergy_check['alerts']",
                      "allergy_override_reason": "consultation.get('allergy_override_reason')"},
              result="consult_result")
    p.xor("gw_lab_order", "Lab tests ordered?", DR)
    p.service("lab_order_create", "Create the lab order", LT, op="lab.create_order",
              params={"patient_id": "patient_id", "test_codes": "consult_result['lab_tests']",
                      "encounter_id": "encounter_id"}, result="lab_order")
    p.service("lab_charges", "Charge the tests", LT, op="finance.post_charges",
              params={"bill_id": "bill['bill_id']",
                      "charges": "[{'source_ref': 'lab_order_item:' + str(i['order_item_id']), 'kind': 'lab', "
                                 "'description': i['name'], 'quantity': 1, 'tariff_code': i['tariff_code']} "
                                 "for i in lab_order['items']]"}, result="lab_charges")
    p.xor("gw_lab_ordered", "", DR)
    p.fork("fork", "", DR)
    p.xor("gw_has_lab", "Lab work?", LT)
    p.call("lab_work", "Lab work", LT, "lab_order")
    p.xor("gw_lab_done", "", LT)
    p.xor("gw_has_meds", "Medicines prescribed?", PH)
    p.service("dispense_lines", "List medicines to dispense", PH, op="inventory.dispense_lines",
              params={"prescription_lines": "consult_result['prescription_lines']"}, result="lines")
    p.service("describe_lines", "Look up the medicines", PH, op="inventory.describe_lines",
              params={"lines": "lines"}, result="medicines")
    p.user("dispense", "Dispense medicines", PH, form="dispense", var="dispensing", scope="none", due_in="PT30M",
           show="medicines,dispense_result,allergy_check",
           instructions="Dispense first-expiry-first-out. Short stock needs a partial-dispensing reason; "
                        "if the patient declines the medicines, set every quantity to 0 and give the reason.")
    p.service("dispense_stock", "Issue from stock", PH, op="inventory.dispense",
              params={"patient_id": "patient_id", "prescription_ref": "'encounter:' + str(encounter_id)",
                      "lines": "dispensing['lines']", "partial_reason": "dispensing.get('partial_reason')",
                      "allergy_override_reason": "dispensing.get('allergy_override_reason') or "
                                                 "consultation.get('allergy_override_reason')"},
              result="dispense_result")
    p.xor("gw_dispensed", "Dispensed?", PH)
    p.service("medicine_charges", "Charge the medicines", PH, op="finance.post_charges",
              params={"bill_id": "bill['bill_id']",
                      "charges": "[{'source_ref': 'dispense_line:' + str(l['dispense_line_id']), 'kind': 'medicine', "
                                 "'description': l['name'], 'quantity': l['quantity'], "
                                 "'unit_price_paisa': l['unit_price_paisa']} for l in dispense_result['lines']]"},
              result="medicine_charges")
    p.xor("gw_meds_done", "", PH)
    p.service("bill_status", "Bill balance", CA, op="finance.bill_status",
              params={"bill_id": "bill['bill_id']"}, result="bill_status")
    p.xor("gw_settled", "Anything to pay?", CA)
    p.user("collect_payment", "Collect payment", CA, form="payment_check", var="payment", scope="none",
           show="bill,bill_status", instructions="Take the balance of the bill, then confirm here.")
    p.xor("gw_paid", "", CA)
    p.fork("join", "", DR)
    p.service("complete", "Close the visit", DR, op="opd.complete_encounter",
              params={"encounter_id": "encounter_id"}, result="visit")
    p.end("end", "Visit complete", DR)

    p.chain("start", "open_bill", "consult_fee", "fee_rule", "gw_fee")
    p.flow("gw_fee", "collect_fee", "fee_rule['before'] == True", name="before")
    p.flow("gw_fee", "gw_fee_join", default=True, name="after")
    p.chain("collect_fee", "fee_status", "gw_fee_paid")
    p.flow("gw_fee_paid", "gw_fee_join", "fee_status['settled'] == True", name="paid")
    p.flow("gw_fee_paid", "collect_fee", default=True, name="not yet")
    p.chain("gw_fee_join", "triage", "record_triage", "consult", "allergy_check", "gw_allergy")
    p.flow("gw_allergy", "consult", "allergy_check['has_alerts'] == True and not consultation.get('allergy_override_reason')",
           name="resolve alert")
    p.flow("gw_allergy", "save_consult", default=True, name="clear")
    p.chain("save_consult", "gw_lab_order")
    p.flow("gw_lab_order", "lab_order_create", "consult_result['has_lab'] == True", name="tests")
    p.flow("gw_lab_order", "gw_lab_ordered", default=True, name="no tests")
    p.chain("lab_order_create", "lab_charges", "gw_lab_ordered", "fork")
    p.flow("fork", "gw_has_lab")
    p.flow("fork", "gw_has_meds")
    p.flow("gw_has_lab", "lab_work", "consult_result['has_lab'] == True", name="yes")
    p.flow("gw_has_lab", "gw_lab_done", default=True, name="no")
    p.chain("lab_work", "gw_lab_done", "join")
    p.flow("gw_has_meds", "dispense_lines", "consult_result['has_meds'] == True", name="yes")
    p.flow("gw_has_meds", "gw_meds_done", default=True, name="no")
    p.chain("dispense_lines", "describe_lines", "dispense", "dispense_stock", "gw_dispensed")
    p.flow("gw_dispensed", "medicine_charges", "dispense_result['ok'] == True", name="issued")
    p.flow("gw_dispensed", "gw_meds_done",
           "bool(dispensing.get('partial_reason')) and all(l['quantity'] == 0 for l in dispensing['lines'])",
           name="declined")
    p.flow("gw_dispensed", "dispense", default=True, name="problem")
    p.chain("medicine_charges", "gw_meds_done", "bill_status", "gw_settled")
    p.flow("gw_settled", "gw_paid", "bill_status['settled'] == True", name="settled")
    p.flow("gw_settled", "collect_payment", default=True, name="balance due")
    p.chain("collect_payment", "bill_status")
    p.chain("gw_paid", "join", "complete", "end")
    return p


def main() -> None:
    for process in (lab_order(), opd_visit()):
        path = WORKFLOWS / f"{process.key}.bpmn"
        path.write_text(process.to_xml(), encoding="utf-8")
        print(f"wrote {path.relative_to(WORKFLOWS.parent)}")


if __name__ == "__main__":
    main()
