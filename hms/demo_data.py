"""The demo hospital, as data: departments, wards, staff accounts and 50 patients.

Everything here is fixed or generated from a seeded random generator, so every install
gets the same departments, the same patients in the same order, and therefore the same
ids and MRNs (screenshots, manuals and bug reports can refer to them).

The patients are fictional. Their identifiers follow the real formats, so the validation
paths are exercised as they will be in a clinic:
- CNIC / Form-B: 13 digits, 5-digit locality code (first digit: 1 Khyber Pakhtunkhwa,
  3 Punjab, 4 Sindh, 5 Balochistan, 6 Islamabad), 7-digit serial, and a last digit that
  is odd for men and even for women, as NADRA issues them.
- Mobile numbers: 03xx-xxxxxxx with network prefixes in 0300-0349 (Jazz, Zong, Ufone,
  Telenor).
"""

from __future__ import annotations

import random
from datetime import date, timedelta

DEMO_PASSWORD = "hms-demo"

# (code, name, kind)
DEPARTMENTS = (
    ("GM", "General Medicine", "clinical"),
    ("PAED", "Paediatrics", "clinical"),
    ("GYN", "Gynaecology", "clinical"),
    ("SURG", "Surgery", "clinical"),
    ("PATH", "Pathology", "diagnostic"),
    ("PHARM", "Pharmacy", "pharmacy"),
)

# code, name, department code, ward type, gender, rooms: ((room name or None, beds), ...)
WARDS = (
    ("MWM", "Medical Ward Male", "GM", "general", "male", (("Room 1", 5), ("Room 2", 5))),
    ("MWF", "Medical Ward Female", "GM", "general", "female", ((None, 10),)),
    ("PW", "Paediatric Ward", "PAED", "general", "mixed", ((None, 8),)),
    ("GMW", "Gynae & Maternity", "GYN", "maternity", "female", ((None, 8),)),
    ("SW", "Surgical Ward", "SURG", "general", "mixed", ((None, 8),)),
    ("PVT", "Private Rooms", "GM", "private", "mixed", tuple((f"Private {n}", 1) for n in range(1, 7))),
    ("ICU", "ICU", "GM", "icu", "mixed", ((None, 4),)),
)
ALL_WARDS = "*"

# username, full name, roles, department codes, ward codes (ALL_WARDS: every demo ward)
USERS = (
    ("admin", "Imran Qureshi", ("admin",), (), ()),
    ("reception", "Sana Javed", ("reception",), ("GM",), ()),
    ("nurse", "Nusrat Parveen", ("nurse",), ("GM",), ("MWM", "MWF")),
    ("ward_nurse", "Rubina Akhtar", ("nurse",), (), ("SW", "PW")),
    ("charge_nurse", "Shazia Bibi", ("nurse", "charge_nurse"), ("GM",), ("MWM", "MWF")),
    ("doctor", "Dr. Ayesha Siddiqui", ("doctor",), ("GM",), ()),
    ("lab", "Kamran Haider", ("lab_technician",), ("PATH",), ()),
    ("pathologist", "Dr. Farhan Mirza", ("pathologist",), ("PATH",), ()),
    ("pharmacist", "Saima Rashid", ("pharmacist",), ("PHARM",), ()),
    ("cashier", "Adnan Malik", ("cashier",), (), ()),
    ("finance", "Shahid Mehmood", ("finance_manager",), (), ()),
    ("head_medicine", "Dr. Tariq Mahmood", ("department_head",), ("GM",), ()),
    ("housekeeping", "Muhammad Aslam", ("housekeeping",), (), ALL_WARDS),
)

# --- patients --------------------------------------------------------------------------

PATIENT_COUNT = 50
CHILD_EVERY = 6  # every sixth patient is a child registered by age only, with a Form-B
_SEED = 20250101
# Birth dates are computed from this fixed day, not today, so the data never drifts.
_REFERENCE_DAY = date(2025, 1, 1)

# city: (CNIC locality codes, neighbourhoods, common family names)
CITIES = {
    "Lahore": (("35201", "35202"), ("Model Town", "Johar Town", "Gulberg III", "Samanabad", "Iqbal Town"),
               ("Butt", "Malik", "Sheikh", "Chaudhry", "Mughal", "Rana")),
    "Karachi": (("42101", "42201", "42301"), ("Gulshan-e-Iqbal Block 13", "North Nazimabad Block H",
                                            "PECHS Block 2", "Korangi", "Malir Cantt"),
                ("Siddiqui", "Ansari", "Memon", "Rizvi", "Zaidi", "Shaikh")),
    "Islamabad": (("61101",), ("G-9/2", "F-10/3", "I-8/4", "G-11/1"),
                  ("Abbasi", "Raja", "Kiani", "Mirza")),
    "Rawalpindi": (("37405",), ("Satellite Town", "Saddar", "Chaklala Scheme III", "Westridge"),
                   ("Janjua", "Satti", "Abbasi", "Awan")),
    "Faisalabad": (("33100",), ("Peoples Colony", "Madina Town", "Gulberg", "Jinnah Colony"),
                   ("Arain", "Rajput", "Cheema", "Bhatti")),
    "Multan": (("36302",), ("Gulgasht Colony", "Shah Rukn-e-Alam Colony", "Cantt", "Bosan Road"),
               ("Gilani", "Qureshi", "Hashmi", "Bosan")),
    "Peshawar": (("17301",), ("Hayatabad Phase 3", "University Town", "Gulbahar", "Saddar"),
                 ("Khan", "Afridi", "Khattak", "Yousafzai", "Bangash")),
    "Quetta": (("54400",), ("Satellite Town", "Jinnah Town", "Samungli Road", "Brewery Road"),
               ("Kakar", "Achakzai", "Baloch", "Tareen")),
}
# Larger cities send more patients.
CITY_WEIGHTS = {"Lahore": 5, "Karachi": 4, "Islamabad": 2, "Rawalpindi": 2, "Faisalabad": 2,
                "Multan": 2, "Peshawar": 2, "Quetta": 1}

MALE_NAMES = ("Muhammad Ali", "Ahmed", "Bilal", "Usman", "Hamza", "Imran", "Faisal", "Zubair",
              "Kashif", "Naveed", "Asif", "Tariq", "Waqas", "Shahzad", "Junaid", "Adeel", "Saad",
              "Fahad", "Rizwan", "Nadeem", "Khalid", "Sohail", "Qasim", "Arif", "Javed",
              "Iftikhar", "Ghulam Rasool", "Abdul Rehman", "Zafar", "Rashid")
FEMALE_NAMES = ("Ayesha", "Fatima", "Zainab", "Maryam", "Sana", "Hina", "Amina", "Saima", "Nadia",
                "Rabia", "Sadia", "Bushra", "Farah", "Kiran", "Samina", "Shazia", "Asma", "Noreen",
                "Uzma", "Iqra", "Mehwish", "Sidra", "Khadija", "Nasreen", "Rukhsana", "Tahira")

# Jazz 0300-0309, Zong 0310-0318, Jazz (ex-Warid) 0320-0325, Ufone 0330-0336, Telenor 0340-0347
MOBILE_PREFIXES = tuple(f"03{n:02d}" for n in (*range(0, 10), *range(10, 19), *range(20, 26),
                                               *range(30, 37), *range(40, 48)))

# (substance, reaction, severity)
ALLERGIES = (
    ("Penicillin", "Urticaria (hives)", "moderate"),
    ("Amoxicillin", "Rash", "mild"),
    ("Sulfa drugs (sulfonamides)", "Skin rash", "mild"),
    ("NSAIDs (ibuprofen, diclofenac)", "Wheezing and breathlessness", "severe"),
    ("Aspirin", "Angioedema", "severe"),
    ("Ceftriaxone", "Itching", "mild"),
    ("Metronidazole", "Nausea and vomiting", "mild"),
    ("Peanuts", "Anaphylaxis", "severe"),
    ("Latex", "Contact dermatitis", "moderate"),
)
ALLERGY_RATE = 0.25


def _identity_number(rng: random.Random, locality: str, sex: str) -> str:
    """A CNIC or Form-B number: locality-serial-check, the last digit odd for men."""
    last = rng.choice((1, 3, 5, 7, 9) if sex == "male" else (2, 4, 6, 8))
    return f"{locality}-{rng.randrange(10 ** 7):07d}-{last}"


def _mobile(rng: random.Random) -> str:
    return f"{rng.choice(MOBILE_PREFIXES)}-{rng.randrange(10 ** 7):07d}"


def _address(rng: random.Random, city: str) -> str:
    area = rng.choice(CITIES[city][1])
    return f"House {rng.randrange(1, 400)}, Street {rng.randrange(1, 40)}, {area}"


def _allergies(rng: random.Random) -> list[dict]:
    if rng.random() >= ALLERGY_RATE:
        return []
    picks = rng.sample(ALLERGIES, 2 if rng.random() < 0.2 else 1)
    return [{"substance": s, "reaction": r, "severity": sev} for s, r, sev in picks]


def _birth_date(rng: random.Random, min_age: int, max_age: int) -> date:
    age = rng.randrange(min_age, max_age + 1)
    return date(_REFERENCE_DAY.year - age - 1, 1, 1) + timedelta(days=rng.randrange(365))


class _Unique:
    """Draws from a generator until it gives a value not seen before (CNICs, mobiles and
    names must not repeat, or the registry's duplicate checks would rightly object)."""

    def __init__(self):
        self.seen: set = set()

    def draw(self, make):
        while True:
            value = make()
            if value not in self.seen:
                self.seen.add(value)
                return value


def _patient(rng: random.Random, index: int, ids: _Unique, mobiles: _Unique, names: _Unique) -> dict:
    city = rng.choices(list(CITY_WEIGHTS), weights=list(CITY_WEIGHTS.values()))[0]
    localities, _areas, families = CITIES[city]
    locality = rng.choice(localities)
    is_child = index % CHILD_EVERY == CHILD_EVERY - 1
    # Adults alternate; children (all at odd indexes) alternate among themselves.
    turn = index // CHILD_EVERY if is_child else index
    sex = "male" if turn % 2 == 0 else "female"

    def person() -> tuple[str, str, str]:
        family = rng.choice(families)
        first = rng.choice(MALE_NAMES if sex == "male" else FEMALE_NAMES)
        guardian = f"{rng.choice(MALE_NAMES)} {family}"
        return f"{first} {family}", guardian, family

    name, guardian, _family = names.draw(person)
    if sex == "male":
        relation = "S/O"
    else:
        # Adult women are registered with their husband's name about as often as their father's.
        relation = "D/O" if is_child or rng.random() < 0.4 else "W/O"
    data = {"name": name, "sex": sex, "relation": relation, "guardian_name": guardian,
            "mobile": mobiles.draw(lambda: _mobile(rng)), "address": _address(rng, city),
            "city": city, "allergies": _allergies(rng)}
    number = ids.draw(lambda: _identity_number(rng, locality, sex))
    if is_child:
        data["age_years"] = rng.randrange(1, 13)
        data["form_b"] = number
    else:
        data["date_of_birth"] = _birth_date(rng, 18, 82).isoformat()
        data["cnic"] = number
    return data


def demo_patients() -> list[dict]:
    """The 50 demo patients as `register_patient` data dicts, always the same, in order."""
    rng = random.Random(_SEED)
    ids, mobiles, names = _Unique(), _Unique(), _Unique()
    return [_patient(rng, i, ids, mobiles, names) for i in range(PATIENT_COUNT)]


def identity_of(patient: dict) -> str:
    """The patient's CNIC or (for a child) Form-B number: what makes the demo idempotent."""
    return patient.get("cnic") or patient["form_b"]
