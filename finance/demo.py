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
    ("CBC", "Complete blood count (CBC)", 800),
    ("HB", "Haemoglobin", 300),
    ("PLT", "Platelet count", 300),
    ("ESR", "Erythrocyte sedimentation rate (ESR)", 300),
    ("BLOOD-GROUP", "Blood group and Rh", 300),
    ("PT-INR", "Prothrombin time / INR", 900),
    ("APTT", "Activated partial thromboplastin time (APTT)", 1000),
    ("BSF", "Blood sugar fasting", 250),
    ("BSR", "Blood sugar random", 250),
    ("HBA1C", "HbA1c", 2200),
    ("LFT", "Liver function tests (LFT)", 1800),
    ("ALT", "ALT (SGPT)", 500),
    ("BILIRUBIN", "Serum bilirubin", 450),
    ("RFT", "Renal function tests (RFT)", 1500),
    ("CREATININE", "Serum creatinine", 500),
    ("UREA", "Blood urea", 450),
    ("ELECTROLYTES", "Serum electrolytes", 1400),
    ("URIC-ACID", "Serum uric acid", 600),
    ("CALCIUM", "Serum calcium", 700),
    ("LIPID", "Lipid profile", 2000),
    ("AMYLASE", "Serum amylase", 1200),
    ("CKMB", "CK-MB", 1500),
    ("TROP-I", "Troponin I", 2500),
    ("TSH", "TSH", 1600),
    ("TFT", "Thyroid function tests (FT3, FT4, TSH)", 3500),
    ("VIT-D", "Vitamin D (25-OH)", 3800),
    ("VIT-B12", "Vitamin B12", 2500),
    ("FERRITIN", "Serum ferritin", 2200),
    ("CRP", "C-reactive protein (CRP)", 1100),
    ("MALARIA", "Malaria parasite (ICT / MP smear)", 600),
    ("TYPHIDOT", "Typhidot", 1200),
    ("WIDAL", "Widal test", 500),
    ("DENGUE-NS1", "Dengue NS1 antigen", 2500),
    ("DENGUE-IGG-IGM", "Dengue IgG / IgM", 2000),
    ("HBSAG", "HBsAg", 900),
    ("ANTI-HCV", "Anti-HCV", 1000),
    ("ANTI-HIV", "Anti-HIV 1/2", 1200),
    ("URINE-RE", "Urine routine examination (R/E)", 400),
    ("URINE-CS", "Urine culture and sensitivity", 1600),
    ("BLOOD-CS", "Blood culture and sensitivity", 2800),
    ("STOOL-RE", "Stool routine examination (R/E)", 400),
    ("UPT", "Urine pregnancy test", 300),
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
)


def tariff_rows() -> list[tuple[str, str, str, int]]:
    """(code, kind, description, cash price in paisa) of every demo tariff item."""
    rows = [(f"CONSULT-{dept}", "consultation", text, rupees * 100) for dept, text, rupees in CONSULTATIONS]
    rows += [(f"LAB-{code}", "lab", text, rupees * 100) for code, text, rupees in LAB_TESTS]
    rows += [(code, "procedure", text, rupees * 100) for code, text, rupees in PROCEDURES]
    return rows


def load(session: Session, actor: Actor) -> list[str]:
    """Add the demo payer class, tariff items and prices that are missing; one summary line
    per area. The caller commits."""
    lines = []
    panel_code, panel_name, panel_kind = PANEL
    known = {p.code for p in services.list_payer_classes(session)}
    if panel_code in known:
        lines.append("payer classes: 0 created, 1 already present")
    else:
        services.define_payer_class(session, actor, code=panel_code, name=panel_name, kind=panel_kind)
        lines.append("payer classes: 1 created, 0 already present")

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

