"""Who may call each OPD route (403 vs not-403), for the permission matrix runner.

The clinical record and an encounter's clinical fields are for doctors, nurses and admins;
reception, cashier and housekeeping get 403 on the record. GET /api/v1/encounters/<id> is
open to reception too but returns only the queue fields to them (tests/web/test_opd_api.py).
"""

ALL = {"reception", "nurse", "doctor", "lab_technician", "pathologist", "pharmacist", "cashier",
       "finance_manager", "department_head", "housekeeping", "admin"}
CLINICAL_LOOKUP = {"doctor", "nurse", "lab_technician", "pathologist", "pharmacist", "department_head", "admin"}
SCHEDULE_VIEW = {"reception", "nurse", "doctor", "department_head", "admin"}
SCHEDULE_MANAGE = {"department_head", "admin"}
APPOINTMENT_VIEW = SCHEDULE_VIEW
APPOINTMENT_BOOK = {"reception", "admin"}
CHECKIN = {"reception", "nurse", "admin"}
QUEUE_WORK = {"doctor", "nurse", "admin"}
QUEUE_CALL = {"doctor", "admin"}
QUEUE_MANAGE = {"reception", "nurse", "doctor", "admin"}
ENCOUNTER_VIEW = {"reception", "nurse", "doctor", "admin"}
CLINICAL = {"doctor", "nurse", "admin"}
DOCTOR = {"doctor"}

ROWS = [
    ("GET", "/api/v1/departments", ALL),
    ("GET", "/api/v1/icd10?q=J06", CLINICAL_LOOKUP),
    ("GET", "/api/v1/opd/doctors", SCHEDULE_VIEW),
    ("GET", "/api/v1/opd/schedules", SCHEDULE_VIEW),
    ("POST", "/api/v1/opd/schedules", SCHEDULE_MANAGE),
    ("POST", "/api/v1/opd/schedules/1/deactivate", SCHEDULE_MANAGE),
    ("GET", "/api/v1/opd/appointments", APPOINTMENT_VIEW),
    ("POST", "/api/v1/opd/appointments", APPOINTMENT_BOOK),
    ("POST", "/api/v1/opd/appointments/1/reschedule", APPOINTMENT_BOOK),
    ("POST", "/api/v1/opd/appointments/1/cancel", APPOINTMENT_BOOK),
    ("POST", "/api/v1/opd/appointments/1/no-show", APPOINTMENT_BOOK),
    ("GET", "/api/v1/opd/doctors/1/slots", APPOINTMENT_VIEW),
    ("GET", "/api/v1/opd/queue/1", ALL),
    ("POST", "/api/v1/opd/queue/1/call-next", QUEUE_CALL),
    ("GET", "/api/v1/encounters/1", ENCOUNTER_VIEW),
    ("POST", "/api/v1/encounters/1/start", DOCTOR),
    ("POST", "/api/v1/encounters/1/left", QUEUE_MANAGE),
    ("POST", "/api/v1/encounters/1/addenda", DOCTOR),
    ("GET", "/api/v1/patients/1/record", CLINICAL),
    # pages
    ("GET", "/opd/checkin", CHECKIN),
    ("POST", "/opd/checkin", CHECKIN),
    ("GET", "/opd/doctor", QUEUE_WORK),
    ("POST", "/opd/queue/1/call-next", QUEUE_CALL),
    ("POST", "/opd/encounters/1/start", DOCTOR),
    ("POST", "/opd/encounters/1/left", QUEUE_MANAGE),
    ("POST", "/opd/encounters/1/addenda", DOCTOR),
    ("GET", "/opd/display", ALL),
    ("GET", "/opd/display/1", ALL),
    ("GET", "/opd/appointments", APPOINTMENT_VIEW),
    ("POST", "/opd/appointments", APPOINTMENT_BOOK),
    ("POST", "/opd/appointments/1/cancel", APPOINTMENT_BOOK),
    ("POST", "/opd/appointments/1/no-show", APPOINTMENT_BOOK),
    ("POST", "/opd/appointments/1/reschedule", APPOINTMENT_BOOK),
    ("GET", "/opd/schedules", SCHEDULE_VIEW),
    ("POST", "/opd/schedules", SCHEDULE_MANAGE),
    ("POST", "/opd/schedules/1/deactivate", SCHEDULE_MANAGE),
    ("GET", "/patients/1/record", CLINICAL),
]
