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


def admission() -> Process:
    """Admission desk (payer, deposit) -> bed reservation -> the ward receives -> assessment."""
    lanes = ["Reception", "Nurse"]
    p = Process("admission", "Admission", lanes)
    RC, NU = lanes
    p.start("start", "Admission ordered", RC)
    p.service("open_bill", "Open the admission bill", RC, op="finance.open_bill",
              params={"patient_id": "patient_id", "admission_id": "admission_id", "payer_class": "payer_class"},
              result="bill")
    p.user("desk", "Admission desk", RC, form="admission_desk", var="desk", scope="none", due_in="PT30M",
           show="bill,payer_result",
           instructions="Record who pays (cash, panel or Sehat Card with the CNIC / Form-B and verification "
                        "number) and take the advance deposit.")
    p.service("set_payer", "Record the payer", RC, op="finance.set_payer",
              params={"bill_id": "bill['bill_id']", "payer_class": "desk['payer_class']",
                      "member_no": "desk.get('member_no')", "verification_ref": "desk.get('verification_ref')",
                      "coverage_limit_paisa": "desk['coverage_limit_rupees'] * 100 "
                                              "if desk.get('coverage_limit_rupees') is not None else None"},
              result="payer_result")
    p.xor("gw_payer", "Payer accepted?", RC)
    p.service("admission_payer", "Payer on the admission", RC, op="wards.set_payer_class",
              params={"admission_id": "admission_id", "payer_class": "desk['payer_class']"}, result="admission_payer")
    p.service("deposit", "Take the advance deposit", RC, op="finance.record_deposit",
              params={"bill_id": "bill['bill_id']", "amount_paisa": "(desk.get('deposit_rupees') or 0) * 100",
                      "method": "desk.get('deposit_method') or 'cash'", "reference": "desk.get('deposit_reference')"},
              result="deposit_result")
    p.service("find_bed", "Find a free bed", RC, op="wards.find_free_bed",
              params={"ward_id": "desk.get('ward_id') or ward_id", "gender": "gender"}, result="bed_choice")
    p.xor("gw_found", "Free bed?", RC)
    p.service("reserve_found", "Reserve the bed", RC, op="wards.reserve_bed",
              params={"bed_id": "bed_choice['bed_id']", "admission_id": "admission_id", "patient_id": "patient_id"},
              result="reservation")
    p.user("choose_bed", "Choose a bed", RC, form="choose_bed", var="chosen", scope="none", due_in="PT15M",
           show="bed_choice,reservation",
           instructions="No free bed was found in the ward asked for, or the bed was taken meanwhile: "
                        "pick a free bed on the bed board.")
    p.service("reserve_chosen", "Reserve the chosen bed", RC, op="wards.reserve_bed",
              params={"bed_id": "chosen['bed_id']", "admission_id": "admission_id", "patient_id": "patient_id"},
              result="reservation")
    p.xor("gw_reserved", "Bed reserved?", RC)
    p.user("receive", "Receive the patient", NU, form="accept_patient", var="arrival", scope="ward",
           ward="=reservation['ward_id']", due_in="PT1H", show="reservation",
           instructions="The bed is reserved: confirm when the patient is in it.")
    p.service("accept", "Patient in bed", NU, op="wards.accept_admission", params={"admission_id": "admission_id"},
              result="accepted")
    p.user("assess", "Admission assessment", NU, form="admission_assessment", var="assessment", scope="ward",
           ward="=accepted['ward_id']", due_in="PT2H")
    p.service("record_assessment", "Record the assessment", NU, op="wards.record_assessment",
              params={"admission_id": "admission_id", "assessment": "assessment"}, result="assessment_result")
    p.end("end", "Admitted", NU)

    p.chain("start", "open_bill", "desk", "set_payer", "gw_payer")
    p.flow("gw_payer", "admission_payer", "payer_result['ok'] == True", name="accepted")
    p.flow("gw_payer", "desk", default=True, name="fix")
    p.chain("admission_payer", "deposit", "find_bed", "gw_found")
    p.flow("gw_found", "reserve_found", "bed_choice['bed_id'] is not None", name="found")
    p.flow("gw_found", "choose_bed", default=True, name="none free")
    p.chain("reserve_found", "gw_reserved")
    p.chain("choose_bed", "reserve_chosen", "gw_reserved")
    p.flow("gw_reserved", "receive", "reservation['ok'] == True", name="reserved")
    p.flow("gw_reserved", "choose_bed", default=True, name="taken")
    p.chain("receive", "accept", "assess", "record_assessment", "end")
    return p


def discharge_billing() -> Process:
    """Discharge summary -> nursing gate -> pharmacy returns -> final bill -> gate pass -> bed cleaned."""
    lanes = ["Doctor", "Nurse", "Pharmacist", "Cashier", "Housekeeping"]
    p = Process("discharge_billing", "Discharge and final bill", lanes)
    DR, NU, PH, CA, HK = lanes
    p.start("start", "Discharge decided", DR)
    p.user("write_summary", "Discharge summary", DR, form="discharge_summary", var="summary", scope="department",
           assign_to="=doctor_id", due_in="PT2H",
           instructions="Diagnoses, procedures, condition at discharge, discharge medicines and follow-up. "
                        "Signing it starts the nursing discharge.")
    p.service("sign", "Sign the summary", DR, op="wards.sign_discharge_summary",
              params={"admission_id": "admission_id", "summary": "summary"}, result="signed")
    p.service("admission_info", "Where the patient is", NU, op="wards.get_admission",
              params={"admission_id": "admission_id"}, result="admission")
    p.service("on_hand", "Medicines on the ward", NU, op="inventory.issued_on_hand",
              params={"admission_id": "admission_id"}, result="on_hand")
    p.user("nursing", "Nursing discharge check", NU, form="nursing_discharge", var="nursing", scope="ward",
           ward="=admission['ward_id']", due_in="PT1H", show="on_hand,gate",
           instructions="Send unused medicines back (one row per issue line). The check is refused while "
                        "pharmacy issues are not accepted, returns are pending or lab samples are outstanding.")
    p.service("pharmacy_blockers", "Pharmacy issues settled?", NU, op="inventory.ward_blockers",
              params={"admission_id": "admission_id"}, result="pharmacy_check")
    p.service("lab_blockers", "Lab samples settled?", NU, op="lab.admission_blockers",
              params={"admission_id": "admission_id"}, result="lab_check")
    p.service("gate", "Nursing discharge gate", NU, op="wards.pass_nursing_gate",
              params={"admission_id": "admission_id",
                      "blockers": "pharmacy_check['blockers'] + lab_check['blockers']"}, result="gate")
    p.xor("gw_gate", "Anything pending?", NU)
    p.service("send_returns", "Send returns to pharmacy", NU, op="inventory.request_returns",
              params={"admission_id": "admission_id", "lines": "nursing.get('returns') or []"}, result="returns_sent")
    p.service("request_final", "Ask finance for the final bill", NU, op="finance.request_final",
              params={"bill_id": "bill_id"}, result="final_request")
    p.xor("gw_returns", "Medicines coming back?", PH)
    p.service("pending_returns", "Returns to receive", PH, op="inventory.pending_returns",
              params={"admission_id": "admission_id"}, result="pending")
    p.user("receive_returns", "Receive ward returns", PH, form="receive_returns", var="received", scope="none",
           due_in="PT1H", show="pending",
           instructions="Count each return; the bill is credited for what you receive.")
    p.service("record_returns", "Put returns back in stock", PH, op="inventory.receive_returns",
              params={"admission_id": "admission_id", "lines": "received['lines']"}, result="returns_result")
    p.xor("gw_returns_done", "", CA)
    p.service("bed_days", "Count the bed-days", CA, op="wards.bed_day_charges",
              params={"admission_id": "admission_id", "final": "True"}, result="bed_days")
    p.service("post_bed_days", "Charge the bed-days", CA, op="finance.post_charges",
              params={"bill_id": "bill_id", "charges": "bed_days['charges']"}, result="bed_day_posting")
    p.service("totals", "Final totals", CA, op="finance.final_totals", params={"bill_id": "bill_id"}, result="totals")
    p.user("close", "Close the final bill", CA, form="final_bill_check", var="closing", scope="none",
           show="bill,totals",
           instructions="Apply discounts, collect the patient's share and close the bill on the bill page, "
                        "then confirm here.")
    p.service("closed_check", "Bill closed?", CA, op="finance.final_totals", params={"bill_id": "bill_id"},
              result="totals")
    p.xor("gw_closed", "Closed?", CA)
    p.service("gate_pass", "Issue the gate pass", CA, op="finance.issue_gate_pass", params={"bill_id": "bill_id"},
              result="gate_pass")
    p.user("see_off", "Patient leaves", NU, form="patient_leaves", var="leaving", scope="ward",
           ward="=admission['ward_id']", due_in="PT1H", show="gate_pass",
           instructions="The bill is settled and the gate pass issued: hand over the summary and medicines, "
                        "then confirm the patient has left the bed.")
    p.service("discharge", "Bed vacated", NU, op="wards.discharge_patient",
              params={"admission_id": "admission_id"}, result="vacated")
    p.user("clean", "Clean the bed", HK, form="clean_bed", var="cleaning", scope="ward", ward="=vacated['ward_id']",
           due_in="PT1H", show="vacated")
    p.service("bed_free", "Bed free", HK, op="wards.mark_bed_clean", params={"bed_id": "vacated['bed_id']"},
              result="cleaned")
    p.end("end", "Discharged", HK)

    p.chain("start", "write_summary", "sign", "admission_info", "on_hand", "nursing", "pharmacy_blockers",
            "lab_blockers", "gate", "gw_gate")
    p.flow("gw_gate", "send_returns", "gate['ok'] == True", name="clear")
    p.flow("gw_gate", "admission_info", default=True, name="blocked")
    p.chain("send_returns", "request_final", "gw_returns")
    p.flow("gw_returns", "pending_returns", "returns_sent['count'] > 0", name="yes")
    p.flow("gw_returns", "gw_returns_done", default=True, name="no")
    p.chain("pending_returns", "receive_returns", "record_returns", "gw_returns_done")
    p.chain("gw_returns_done", "bed_days", "post_bed_days", "totals", "close", "closed_check", "gw_closed")
    p.flow("gw_closed", "gate_pass", "totals['closed'] == True", name="closed")
    p.flow("gw_closed", "close", default=True, name="still open")
    p.chain("gate_pass", "see_off", "discharge", "clean", "bed_free", "end")
    return p


def ward_transfer() -> Process:
    """The target ward accepts (and gives a bed) or refuses; the old bed is cleaned."""
    lanes = ["Nurse", "Housekeeping"]
    p = Process("ward_transfer", "Ward transfer", lanes)
    NU, HK = lanes
    p.start("start", "Transfer requested", NU)
    p.user("decide", "Accept transfer", NU, form="transfer_accept", var="decision", scope="ward",
           ward="=to_ward_id", due_in="PT1H", show="transfer,moved",
           instructions="A patient is coming to your ward: accept and give a free bed, or refuse with a reason.")
    p.xor("gw_decision", "Accepted?", NU)
    p.service("move", "Move the patient", NU, op="wards.accept_transfer",
              params={"transfer_id": "transfer_id", "bed_id": "decision.get('bed_id')"}, result="moved")
    p.xor("gw_moved", "Moved?", NU)
    p.service("refuse", "Refuse the transfer", NU, op="wards.reject_transfer",
              params={"transfer_id": "transfer_id", "reason": "decision.get('reason') or 'Refused by the ward'"},
              result="refused")
    p.end("end_refused", "Transfer refused", NU)
    p.user("clean", "Clean the bed", HK, form="clean_bed", var="cleaning", scope="ward", ward="=from_ward_id",
           due_in="PT1H", show="transfer")
    p.service("bed_free", "Bed free", HK, op="wards.mark_bed_clean", params={"bed_id": "from_bed_id"},
              result="cleaned")
    p.end("end", "Transferred", HK)
    p.chain("start", "decide", "gw_decision")
    p.flow("gw_decision", "move", "decision['accept'] == True", name="accept")
    p.flow("gw_decision", "refuse", default=True, name="refuse")
    p.chain("move", "gw_moved")
    p.flow("gw_moved", "clean", "moved['ok'] == True", name="moved")
    p.flow("gw_moved", "decide", default=True, name="bed taken")
    p.chain("refuse", "end_refused")
    p.chain("clean", "bed_free", "end")
    return p


def _escalating(key: str, name: str, task_name: str, form: str, var: str, record_op: str, record_params: dict,
                missed_op: str, id_var: str, kind: str, show: str, instructions: str) -> Process:
    """One recurring nursing task as its own small instance: the nurse records it, or at its
    escalation time it becomes missed and the ward's charge nurse reviews it."""
    lanes = ["Nurse", "Charge Nurse"]
    p = Process(key, name, lanes)
    NU, CN = lanes
    p.start("start", "Due", NU)
    p.user("do", task_name, NU, form=form, var=var, scope="ward", due_at="=due_at", priority=2, show=show,
           instructions=instructions)
    p.service("record", "Record it", NU, op=record_op, params=record_params, result="recorded")
    p.end("end", "Done", NU)
    p.boundary_timer("overdue", "Not recorded in time", "do", "escalate_at")
    p.service("mark_missed", "Mark missed", CN, op=missed_op, params={id_var: id_var}, result="missed")
    p.xor("gw_missed", "Missed?", CN)
    p.user("review", f"Missed: {task_name.lower()}", CN, form="missed_review", var="review", scope="ward",
           priority=1, due_in="PT1H", show=show,
           instructions="Not recorded by its time plus the grace period. Find out and record what was done.")
    p.service("record_review", "Record the review", CN, op="wards.review_missed",
              params={"kind": f"'{kind}'", "item_id": id_var, "note": "review['note']"}, result="reviewed")
    p.end("end_missed", "Reviewed", CN)
    p.end("end_recorded", "Recorded meanwhile", CN)
    p.chain("start", "do", "record", "end")
    p.chain("overdue", "mark_missed", "gw_missed")
    p.flow("gw_missed", "review", "missed['missed'] == True", name="missed")
    p.flow("gw_missed", "end_recorded", default=True, name="recorded")
    p.chain("review", "record_review", "end_missed")
    return p


def vitals_round() -> Process:
    return _escalating("vitals_round", "Vitals round", "Vitals round", "vitals_round", "vitals",
                       "wards.record_vitals_round", {"round_id": "round_id", "vitals": "vitals"},
                       "wards.mark_round_missed", "round_id", "round", "task_info",
                       "Record temperature, pulse, blood pressure, respiration, SpO2 and pain.")


def medication_dose() -> Process:
    return _escalating("medication_dose", "Medicine dose", "Give medicine", "dose_record", "dose",
                       "wards.record_dose", {"slot_id": "slot_id", "status": "dose['status']",
                                             "reason": "dose.get('reason')"},
                       "wards.mark_dose_missed", "slot_id", "dose", "task_info",
                       "Give the dose shown, then record it; not given or held needs a reason.")


def ward_medication() -> Process:
    """A medicine ordered for an inpatient: pharmacy issues it to the ward, charged; the ward accepts it."""
    lanes = ["Pharmacist", "Nurse"]
    p = Process("ward_medication", "Ward medicine issue", lanes)
    PH, NU = lanes
    p.start("start", "Medicine ordered", PH)
    p.service("describe", "Look up the medicine", PH, op="inventory.describe_lines", params={"lines": "lines"},
              result="medicines")
    p.user("issue", "Issue to the ward", PH, form="dispense", var="dispensing", scope="none", due_in="PT1H",
           show="medicines,dispense_result",
           instructions="Issue first-expiry-first-out for the ward; short stock needs a partial-supply reason.")
    p.service("dispense", "Issue from stock", PH, op="inventory.dispense",
              params={"patient_id": "patient_id", "admission_id": "admission_id",
                      "prescription_ref": "'admission:' + str(admission_id) + ':medorder:' + str(order_id)",
                      "lines": "dispensing['lines']", "partial_reason": "dispensing.get('partial_reason')",
                      "allergy_override_reason": "dispensing.get('allergy_override_reason')"},
              result="dispense_result")
    p.xor("gw_issued", "Issued?", PH)
    p.service("charge", "Charge the medicines", PH, op="finance.post_charges",
              params={"bill_id": "bill_id",
                      "charges": "[{'source_ref': 'dispense_line:' + str(l['dispense_line_id']), 'kind': 'medicine', "
                                 "'description': l['name'], 'quantity': l['quantity'], "
                                 "'unit_price_paisa': l['unit_price_paisa']} for l in dispense_result['lines']]"},
              result="charges")
    p.service("issue_info", "What was issued", NU, op="inventory.ward_issue_info",
              params={"dispense_id": "dispense_result['dispense_id']"}, result="issue")
    p.service("where", "Where the patient is", NU, op="wards.get_admission", params={"admission_id": "admission_id"},
              result="admission")
    p.user("receive", "Receive medicines", NU, form="ward_issue_accept", var="receipt", scope="ward",
           ward="=admission['ward_id']", due_in="PT1H", show="issue",
           instructions="Check the medicines against the issue; the discharge is blocked until you accept them.")
    p.service("accept", "Accepted on the ward", NU, op="inventory.accept_ward_issue",
              params={"dispense_id": "dispense_result['dispense_id']"}, result="accepted")
    p.end("end", "On the ward", NU)
    p.chain("start", "describe", "issue", "dispense", "gw_issued")
    p.flow("gw_issued", "charge", "dispense_result['ok'] == True", name="issued")
    p.flow("gw_issued", "issue", default=True, name="problem")
    p.chain("charge", "issue_info", "where", "receive", "accept", "end")
    return p


def main() -> None:
    for process in (lab_order(), opd_visit(), admission(), discharge_billing(), ward_transfer(), vitals_round(),
                    medication_dose(), ward_medication()):
        path = WORKFLOWS / f"{process.key}.bpmn"
        path.write_text(process.to_xml(), encoding="utf-8")
        print(f"wrote {path.relative_to(WORKFLOWS.parent)}")


if __name__ == "__main__":
    main()
