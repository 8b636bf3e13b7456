"""Demo tariffs: consultation fees per department, the lab catalogue's tests, common OPD
procedures, and the price list of one panel client (PTCL), in PKR.

`load(session, actor)` adds what is missing through the finance services (validated and
audited like any change) and never overwrites a price staff have changed since, so
running it again changes nothing and says so. Lab test codes are "LAB-<TESTCODE>" with the
test codes of the lab catalogue (LAB_TESTS).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from finance import services
from finance.models import CASH, TariffItem, TariffPrice
from hms.audit import Actor

PANEL = ("panel-ptcl", "PTCL (panel)", "panel")
SEHAT = ("sehat", "Sehat Card", "sehat")

# Inpatient daily rates (bed and nursing), code, description, cash rupees per day.
INPATIENT = (
    ("BED-GENERAL", "bed", "Bed - general ward (per day)", 3000),
    ("BED-PRIVATE", "bed", "Bed - private room (per day)", 9000),
    ("BED-ICU", "bed", "Bed - ICU (per day)", 25000),
    ("BED-MATERNITY", "bed", "Bed - maternity ward (per day)", 4000),
    ("NURSING-GENERAL", "nursing", "Nursing care - general ward (per day)", 1500),
    ("NURSING-PRIVATE", "nursing", "Nursing care - private room (per day)", 2500),
    ("NURSING-ICU", "nursing", "Nursing care - ICU (per day)", 8000),
    ("NURSING-MATERNITY", "nursing", "Nursing care - maternity (per day)", 2000),
    ("PROC-IV-CANNULA", "procedure", "IV cannulation", 600),
    ("PROC-CATHETER", "procedure", "Urinary catheterisation", 1200),
    ("PROC-NG-TUBE", "procedure", "Nasogastric tube insertion", 1000),
    ("PROC-BLOOD-TRANSFUSION", "procedure", "Blood transfusion (administration)", 3000),
    ("PKG-CSECTION", "package", "Package - caesarean section (3 days)", 120000),
    ("PKG-APPENDECTOMY", "package", "Package - appendectomy (2 days)", 90000),
    ("PKG-NVD", "package", "Package - normal delivery (1 day)", 45000),
)

# department code, description, fee in rupees
CONSULTATIONS = (
    ("GM", "Consultation - General Medicine", 1500),
    ("PAED", "Consultation - Paediatrics", 1500),
    ("GYN", "Consultation - Gynaecology", 2000),
    ("SURG", "Consultation - Surgery", 2000),
    ("DEFAULT", "Consultation", 1000),
)

# test code (the lab catalogue's), description, price in rupees
LAB_TESTS = (
    # Codes are the lab catalogue's (departments/lab/demo.py); tariff code "LAB-<code>".
    ("CBC", "Complete blood count (CBC)", 800),
    ("ESR", "Erythrocyte sedimentation rate (ESR)", 300),
    ("PTINR", "Prothrombin time / INR", 900),
    ("APTT", "Activated partial thromboplastin time (APTT)", 1000),
    ("BG", "Blood group and Rh", 300),
    ("MP", "Malaria parasite (blood film)", 400),
    ("RETIC", "Reticulocyte count", 500),
    ("PBF", "Peripheral blood film", 600),
    ("BTCT", "Bleeding time / clotting time", 300),
    ("LFT", "Liver function tests (LFT)", 1800),
    ("RFT", "Renal function tests (RFT)", 1500),
    ("ELEC", "Serum electrolytes", 1400),
    ("FBS", "Blood sugar fasting", 250),
    ("RBS", "Blood sugar random", 250),
    ("HBA1C", "HbA1c", 2200),
    ("LIPID", "Lipid profile", 2000),
    ("UA", "Serum uric acid", 600),
    ("CA", "Serum calcium", 700),
    ("PHOS", "Serum phosphorus", 700),
    ("CRP", "C-reactive protein (CRP)", 1100),
    ("TSH", "TSH", 1600),
    ("TFT", "Thyroid function tests (FT3, FT4, TSH)", 3500),
    ("AMY", "Serum amylase", 1200),
    ("VITD", "Vitamin D (25-OH)", 3800),
    ("FERR", "Serum ferritin", 2200),
    ("TROPI", "Troponin I", 2500),
    ("HBSAG", "HBsAg", 900),
    ("HCV", "Anti-HCV", 1000),
    ("HIV", "Anti-HIV 1/2", 1200),
    ("TYPHI", "Typhidot", 1200),
    ("WIDAL", "Widal test", 500),
    ("DENGNS1", "Dengue NS1 antigen", 2500),
    ("DENGAB", "Dengue IgG / IgM", 2000),
    ("MPICT", "Malaria ICT", 600),
    ("HPYL", "H. pylori antibodies", 1500),
    ("RAF", "Rheumatoid factor", 900),
    ("ASO", "ASO titre", 900),
    ("URE", "Urine routine examination (R/E)", 400),
    ("UPT", "Urine pregnancy test", 300),
    ("SRE", "Stool routine examination (R/E)", 400),
    ("UCS", "Urine culture and sensitivity", 1600),
    ("BCS", "Blood culture and sensitivity", 2800),
    ("AFB", "AFB smear", 800),
    ("GXPERT", "GeneXpert MTB/RIF", 4500),
)

# code, description, price in rupees
PROCEDURES = (
    ("PROC-DRESSING", "Dressing", 500),
    ("PROC-INJECTION", "Injection (administration)", 200),
    ("PROC-NEBULISATION", "Nebulisation", 400),
    ("PROC-ECG", "ECG", 800),
    ("PROC-SUTURING", "Suturing", 1500),
)

# The PTCL panel's negotiated prices (about 10% below cash) on a few items, in rupees.
PANEL_PRICES = (
    ("CONSULT-GM", 1350),
    ("CONSULT-GYN", 1800),
    ("CONSULT-SURG", 1800),
    ("LAB-CBC", 720),
    ("LAB-LFT", 1620),
    ("LAB-HBA1C", 1980),
    ("LAB-LIPID", 1800),
    ("PROC-ECG", 720),
    ("BED-GENERAL", 2700),
    ("BED-PRIVATE", 8100),
    ("BED-ICU", 22500),
    ("BED-MATERNITY", 3600),
    ("PKG-CSECTION", 110000),
    ("PKG-APPENDECTOMY", 82000),
)


def tariff_rows() -> list[tuple[str, str, str, int]]:
    """(code, kind, description, cash price in paisa) of every demo tariff item."""
    rows = [(f"CONSULT-{dept}", "consultation", text, rupees * 100) for dept, text, rupees in CONSULTATIONS]
    rows += [(f"LAB-{code}", "lab", text, rupees * 100) for code, text, rupees in LAB_TESTS]
    rows += [(code, "procedure", text, rupees * 100) for code, text, rupees in PROCEDURES]
    rows += [(code, kind, text, rupees * 100) for code, kind, text, rupees in INPATIENT]
    return rows


def load(session: Session, actor: Actor) -> list[str]:
    """Add the demo payer class, tariff items and prices that are missing; one summary line
    per area. The caller commits."""
    lines = []
    panel_code = PANEL[0]
    known = {p.code for p in services.list_payer_classes(session)}
    made = 0
    for code, name, kind in (PANEL, SEHAT):
        if code not in known:
            services.define_payer_class(session, actor, code=code, name=name, kind=kind)
            made += 1
    lines.append(f"payer classes: {made} created, {2 - made} already present")

    existing = set(session.scalars(select(TariffItem.code)))
    cash_priced = set(session.scalars(select(TariffItem.code).join(TariffPrice)
                                      .where(TariffPrice.payer_class == CASH)))
    rows = tariff_rows()
    created = priced = 0
    for code, kind, description, paisa in rows:
        if code not in existing:
            services.create_tariff_item(session, actor, code=code, kind=kind, description=description,
                                        price_paisa=paisa)
            created += 1
        elif code not in cash_priced:
            services.set_price(session, actor, code, CASH, paisa)
            priced += 1
    lines.append(f"tariff items: {created} created, {len(rows) - created} already present"
                 + (f" ({priced} given their missing cash price)" if priced else ""))

    panel_priced = set(session.scalars(select(TariffItem.code).join(TariffPrice)
                                       .where(TariffPrice.payer_class == panel_code)))
    set_now = 0
    for code, rupees in PANEL_PRICES:
        if code not in panel_priced:
            services.set_price(session, actor, code, panel_code, rupees * 100)
            set_now += 1
    lines.append(f"{panel_code} prices: {set_now} set, {len(PANEL_PRICES) - set_now} already present")
    session.flush()
    return lines

