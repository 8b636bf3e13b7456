"""The demo lab catalogue: the tests most often ordered in Pakistani hospital and
standalone laboratories, with their analytes, units and adult/child reference ranges.

`load(session, actor)` adds the tests whose code is missing (through the service, which
validates and audits them) and returns one summary line; running it again adds nothing.
Tariff codes are "LAB-<CODE>": the finance demo seeds tariffs under the same codes.

Ranges are typical adult (and, where they differ much, paediatric) intervals as printed
on local reports; each laboratory should replace them with its own validated ranges.
Ages are in days: Y is a year, M a month.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from departments.lab import services
from departments.lab.models import LabTest
from hms.audit import Actor

Y = 365
M = 30
ADULT = (18 * Y, None)
CHILD = (0, 18 * Y)
POS_NEG = ["Negative", "Positive"]
REACTIVE = ["Non-reactive", "Reactive"]
GRADES = ["Nil", "Trace", "+", "++", "+++", "++++"]


def r(low=None, high=None, sex="any", age=(0, None), crit=(None, None), note=None) -> dict:
    """A reference range: limits, sex, age band in days [from, to), critical limits."""
    return {"sex": sex, "min_age_days": age[0], "max_age_days": age[1], "low": low, "high": high,
            "critical_low": crit[0], "critical_high": crit[1], "note": note}


def num(code, name, units, decimals, *ranges, max=None, negative=False) -> dict:
    return {"code": code, "name": name, "result_type": "numeric", "units": units, "decimals": decimals,
            "plausible_max": max, "allow_negative": negative, "ranges": list(ranges)}


def opt(code, name, options, abnormal=(), critical=()) -> dict:
    return {"code": code, "name": name, "result_type": "options", "options": list(options),
            "abnormal_options": list(abnormal), "critical_options": list(critical)}


def text(code, name, units=None) -> dict:
    return {"code": code, "name": name, "result_type": "text", "units": units}


def test(code, name, sample_type, section, *analytes) -> dict:
    return {"code": code, "name": name, "sample_type": sample_type, "section": section,
            "tariff_code": f"LAB-{code}", "analytes": list(analytes)}


HB = num("HB", "Haemoglobin", "g/dL", 1,
         r("13.5", "21.5", age=(0, M), crit=("7", "23")),
         r("10.5", "13.5", age=(M, 2 * Y), crit=("7", "20")),
         r("11.5", "15.5", age=(2 * Y, 12 * Y), crit=("7", "20")),
         r("13.0", "16.0", "male", (12 * Y, 18 * Y), ("7", "20")),
         r("12.0", "16.0", "female", (12 * Y, 18 * Y), ("7", "20")),
         r("13.0", "17.0", "male", ADULT, ("7", "20")),
         r("12.0", "15.0", "female", ADULT, ("7", "20")),
         max="25")
TLC = num("TLC", "Total leucocyte count", "x10^9/L", 1,
          r("9.0", "30.0", age=(0, M), crit=("2.0", "40.0")),
          r("6.0", "17.5", age=(M, 2 * Y), crit=("2.0", "30.0")),
          r("5.0", "14.5", age=(2 * Y, 12 * Y), crit=("2.0", "30.0")),
          r("4.0", "11.0", age=(12 * Y, None), crit=("2.0", "30.0")),
          max="1000")
PLT = num("PLT", "Platelet count", "x10^9/L", 0, r("150", "410", crit=("20", "1000")), max="3000")

CATALOGUE: list[dict] = [
    # --- haematology -------------------------------------------------------------------
    test("CBC", "Complete blood count", "blood_edta", "haematology",
         HB,
         num("RBC", "Red cell count", "x10^12/L", 2, r("4.0", "5.2", age=CHILD),
             r("4.5", "5.5", "male", ADULT), r("3.8", "4.8", "female", ADULT), max="12"),
         num("HCT", "Haematocrit (PCV)", "%", 1, r("35", "45", age=CHILD, crit=("20", "60")),
             r("40", "50", "male", ADULT, ("20", "60")), r("36", "46", "female", ADULT, ("20", "60")), max="80"),
         num("MCV", "Mean cell volume", "fL", 1, r("75", "95", age=(0, 12 * Y)), r("83", "101", age=(12 * Y, None)),
             max="200"),
         num("MCH", "Mean cell haemoglobin", "pg", 1, r("27", "32"), max="60"),
         num("MCHC", "Mean cell haemoglobin concentration", "g/dL", 1, r("31.5", "34.5"), max="50"),
         TLC,
         num("NEUT", "Neutrophils", "%", 0, r("40", "80"), max="100"),
         num("LYMPH", "Lymphocytes", "%", 0, r("20", "60", age=(0, 12 * Y)), r("20", "40", age=(12 * Y, None)),
             max="100"),
         num("MONO", "Monocytes", "%", 0, r("2", "10"), max="100"),
         num("EOS", "Eosinophils", "%", 0, r("1", "6"), max="100"),
         num("BASO", "Basophils", "%", 0, r("0", "2"), max="100"),
         PLT),
    test("ESR", "Erythrocyte sedimentation rate", "blood_edta", "haematology",
         num("ESR", "ESR (Westergren)", "mm/1st hr", 0, r("0", "10", age=CHILD), r("0", "15", "male", ADULT),
             r("0", "20", "female", ADULT), max="200")),
    test("PTINR", "Prothrombin time / INR", "plasma_citrate", "haematology",
         num("PT", "Prothrombin time", "sec", 1, r("11.0", "13.5", crit=(None, "30.0")), max="200"),
         num("INR", "INR", None, 2, r("0.8", "1.2", crit=(None, "5.0")), max="20")),
    test("APTT", "Activated partial thromboplastin time", "plasma_citrate", "haematology",
         num("APTT", "APTT", "sec", 1, r("25.0", "35.0", crit=(None, "100.0")), max="300")),
    test("BG", "Blood group and Rh", "blood_edta", "haematology",
         opt("ABO", "ABO group", ["A", "B", "AB", "O"]),
         opt("RH", "Rh (D)", ["Positive", "Negative"])),
    test("MP", "Malaria parasite (blood film)", "blood_edta", "haematology",
         opt("MPFILM", "Malaria parasites", ["Not seen", "P. vivax seen", "P. falciparum seen", "Mixed infection seen"],
             abnormal=["P. vivax seen"], critical=["P. falciparum seen", "Mixed infection seen"])),
    test("RETIC", "Reticulocyte count", "blood_edta", "haematology",
         num("RETIC", "Reticulocytes", "%", 1, r("0.5", "2.5"), max="60")),
    test("PBF", "Peripheral blood film", "blood_edta", "haematology",
         text("PBFRBC", "Red cells"), text("PBFWBC", "White cells"), text("PBFPLT", "Platelets")),
    test("BTCT", "Bleeding time / clotting time", "whole_blood", "haematology",
         num("BT", "Bleeding time", "min", 1, r("2", "7"), max="60"),
         num("CT", "Clotting time", "min", 1, r("4", "10"), max="60")),

    # --- chemical pathology ------------------------------------------------------------
    test("LFT", "Liver function tests", "serum", "chemistry",
         num("TBIL", "Total bilirubin", "mg/dL", 2, r("0.1", "12.0", age=(0, M), crit=(None, "15")),
             r("0.1", "1.2", age=(M, None), crit=(None, "15")), max="60"),
         num("DBIL", "Direct bilirubin", "mg/dL", 2, r("0.0", "0.3"), max="40"),
         num("ALT", "ALT (SGPT)", "U/L", 0, r("0", "41", "male"), r("0", "33", "female"), r("0", "40"), max="20000"),
         num("AST", "AST (SGOT)", "U/L", 0, r("0", "40", "male"), r("0", "32", "female"), r("0", "40"), max="20000"),
         num("ALP", "Alkaline phosphatase", "U/L", 0, r("100", "390", age=CHILD), r("40", "129", "male", ADULT),
             r("35", "104", "female", ADULT), max="10000"),
         num("GGT", "Gamma GT", "U/L", 0, r("10", "71", "male"), r("6", "42", "female"), r("6", "71"), max="5000"),
         num("TP", "Total protein", "g/dL", 1, r("6.6", "8.7"), max="20"),
         num("ALB", "Albumin", "g/dL", 1, r("3.5", "5.2", crit=("1.5", None)), max="10")),
    test("RFT", "Renal function tests", "serum", "chemistry",
         num("UREA", "Urea", "mg/dL", 0, r("10", "38", age=CHILD, crit=(None, "200")),
             r("15", "45", age=ADULT, crit=(None, "200")), max="1000"),
         num("CREAT", "Creatinine", "mg/dL", 2, r("0.30", "0.70", age=(0, 12 * Y), crit=(None, "7.0")),
             r("0.70", "1.30", "male", (12 * Y, None), (None, "7.0")),
             r("0.60", "1.10", "female", (12 * Y, None), (None, "7.0")), max="40"),
         num("NA", "Sodium", "mmol/L", 0, r("136", "145", crit=("120", "160")), max="250"),
         num("K", "Potassium", "mmol/L", 1, r("3.5", "5.1", crit=("2.5", "6.5")), max="15"),
         num("CL", "Chloride", "mmol/L", 0, r("98", "107", crit=("80", "120")), max="200"),
         num("HCO3", "Bicarbonate", "mmol/L", 0, r("22", "29", crit=("10", "40")), max="80")),
    test("ELEC", "Serum electrolytes", "serum", "chemistry",
         num("NA", "Sodium", "mmol/L", 0, r("136", "145", crit=("120", "160")), max="250"),
         num("K", "Potassium", "mmol/L", 1, r("3.5", "5.1", crit=("2.5", "6.5")), max="15"),
         num("CL", "Chloride", "mmol/L", 0, r("98", "107", crit=("80", "120")), max="200")),
    test("FBS", "Fasting blood sugar", "plasma_fluoride", "chemistry",
         num("GLU", "Glucose (fasting)", "mg/dL", 0, r("70", "99", crit=("40", "500"), note="fasting"), max="2000")),
    test("RBS", "Random blood sugar", "plasma_fluoride", "chemistry",
         num("GLU", "Glucose (random)", "mg/dL", 0, r("70", "140", crit=("40", "500")), max="2000")),
    test("HBA1C", "Glycated haemoglobin (HbA1c)", "blood_edta", "chemistry",
         num("HBA1C", "HbA1c", "%", 1, r("4.0", "5.6", note="5.7-6.4 prediabetes; 6.5+ diabetes"), max="25")),
    test("LIPID", "Lipid profile", "serum", "chemistry",
         num("CHOL", "Total cholesterol", "mg/dL", 0, r(None, "200"), max="2000"),
         num("TG", "Triglycerides", "mg/dL", 0, r(None, "150", crit=(None, "1000")), max="10000"),
         num("HDL", "HDL cholesterol", "mg/dL", 0, r("40", None, "male"), r("50", None, "female"), r("40", None),
             max="300"),
         num("LDL", "LDL cholesterol", "mg/dL", 0, r(None, "130"), max="1000"),
         num("VLDL", "VLDL cholesterol", "mg/dL", 0, r("5", "40"), max="1000")),
    test("UA", "Serum uric acid", "serum", "chemistry",
         num("UA", "Uric acid", "mg/dL", 1, r("3.4", "7.0", "male"), r("2.4", "5.7", "female"), r("2.4", "7.0"),
             max="40")),
    test("CA", "Serum calcium", "serum", "chemistry",
         num("CA", "Calcium", "mg/dL", 1, r("8.6", "10.2", crit=("6.0", "13.0")), max="25")),
    test("PHOS", "Serum phosphorus", "serum", "chemistry",
         num("PHOS", "Phosphorus", "mg/dL", 1, r("4.0", "7.0", age=CHILD), r("2.5", "4.5", age=ADULT,
                                                                           crit=("1.0", None)), max="30")),
    test("CRP", "C-reactive protein", "serum", "chemistry",
         num("CRP", "CRP", "mg/L", 1, r(None, "5.0"), max="1000")),
    test("TSH", "Thyroid stimulating hormone", "serum", "chemistry",
         num("TSH", "TSH", "uIU/mL", 2, r("0.27", "4.20"), max="500")),
    test("TFT", "Thyroid function tests", "serum", "chemistry",
         num("FT3", "Free T3", "pg/mL", 2, r("2.00", "4.40"), max="100"),
         num("FT4", "Free T4", "ng/dL", 2, r("0.93", "1.70"), max="20"),
         num("TSH", "TSH", "uIU/mL", 2, r("0.27", "4.20"), max="500")),
    test("AMY", "Serum amylase", "serum", "chemistry",
         num("AMY", "Amylase", "U/L", 0, r("28", "100"), max="20000")),
    test("VITD", "Vitamin D (25-OH)", "serum", "chemistry",
         num("VITD", "25-OH vitamin D", "ng/mL", 1, r("30", "100", note="<20 deficient; 20-29 insufficient"),
             max="300")),
    test("FERR", "Serum ferritin", "serum", "chemistry",
         num("FERR", "Ferritin", "ng/mL", 0, r("30", "400", "male"), r("13", "150", "female"), r("13", "400"),
             max="100000")),
    test("TROPI", "Troponin I (rapid)", "serum", "chemistry",
         opt("TROPI", "Troponin I", POS_NEG, critical=["Positive"])),

    # --- serology ----------------------------------------------------------------------
    test("HBSAG", "Hepatitis B surface antigen", "serum", "serology",
         opt("HBSAG", "HBsAg", REACTIVE, abnormal=["Reactive"])),
    test("HCV", "Anti-HCV antibodies", "serum", "serology",
         opt("HCV", "Anti-HCV", REACTIVE, abnormal=["Reactive"])),
    test("HIV", "Anti-HIV 1/2 antibodies", "serum", "serology",
         opt("HIV", "Anti-HIV 1/2", REACTIVE, abnormal=["Reactive"])),
    test("TYPHI", "Typhidot (Salmonella typhi IgM/IgG)", "serum", "serology",
         opt("IGM", "S. typhi IgM", POS_NEG, abnormal=["Positive"]),
         opt("IGG", "S. typhi IgG", POS_NEG, abnormal=["Positive"])),
    test("WIDAL", "Widal test", "serum", "serology",
         *[opt(code, name, ["Nil", "1:20", "1:40", "1:80", "1:160", "1:320"], abnormal=["1:160", "1:320"])
           for code, name in (("TO", "S. typhi O"), ("TH", "S. typhi H"), ("AH", "S. paratyphi AH"),
                              ("BH", "S. paratyphi BH"))]),
    test("DENGNS1", "Dengue NS1 antigen", "serum", "serology",
         opt("NS1", "Dengue NS1", POS_NEG, abnormal=["Positive"])),
    test("DENGAB", "Dengue IgM / IgG antibodies", "serum", "serology",
         opt("DIGM", "Dengue IgM", POS_NEG, abnormal=["Positive"]),
         opt("DIGG", "Dengue IgG", POS_NEG, abnormal=["Positive"])),
    test("MPICT", "Malaria ICT (P.f / P.v antigen)", "whole_blood", "serology",
         opt("PF", "P. falciparum antigen", POS_NEG, critical=["Positive"]),
         opt("PV", "P. vivax antigen", POS_NEG, abnormal=["Positive"])),
    test("HPYL", "H. pylori antibodies", "serum", "serology",
         opt("HPYL", "H. pylori antibody", POS_NEG, abnormal=["Positive"])),
    test("RAF", "Rheumatoid factor", "serum", "serology",
         num("RAF", "Rheumatoid factor", "IU/mL", 0, r(None, "14"), max="5000")),
    test("ASO", "Anti-streptolysin O titre", "serum", "serology",
         num("ASO", "ASO titre", "IU/mL", 0, r(None, "200"), max="10000")),

    # --- urine and stool ---------------------------------------------------------------
    test("URE", "Urine routine examination", "urine", "urine",
         opt("COLOR", "Colour", ["Pale yellow", "Yellow", "Dark yellow", "Amber", "Red", "Brown"],
             abnormal=["Red", "Brown"]),
         opt("APPEAR", "Appearance", ["Clear", "Slightly turbid", "Turbid"], abnormal=["Turbid"]),
         num("PH", "pH", None, 1, r("4.5", "8.0"), max="14"),
         num("SG", "Specific gravity", None, 3, r("1.005", "1.030"), max="1.100"),
         opt("PROT", "Protein", GRADES, abnormal=GRADES[2:]),
         opt("SUGAR", "Sugar", GRADES, abnormal=GRADES[2:]),
         opt("KET", "Ketones", ["Negative", "Trace", "+", "++", "+++"], abnormal=["+", "++", "+++"]),
         opt("BLOOD", "Blood", ["Negative", "Trace", "+", "++", "+++"], abnormal=["+", "++", "+++"]),
         opt("NIT", "Nitrite", POS_NEG, abnormal=["Positive"]),
         text("PUS", "Pus cells", "/HPF"),
         text("URBC", "Red cells", "/HPF"),
         text("EPI", "Epithelial cells", "/HPF"),
         opt("CAST", "Casts", ["Nil", "Hyaline", "Granular", "RBC casts", "WBC casts"],
             abnormal=["Granular", "RBC casts", "WBC casts"]),
         text("CRYST", "Crystals")),
    test("UPT", "Urine pregnancy test (beta-hCG)", "urine", "urine",
         opt("UPT", "Beta-hCG", POS_NEG)),
    test("SRE", "Stool routine examination", "stool", "stool",
         opt("SCOLOR", "Colour", ["Brown", "Yellow", "Green", "Black", "Red"], abnormal=["Black", "Red"]),
         opt("CONSIST", "Consistency", ["Formed", "Semi-formed", "Loose", "Watery", "Mucoid"],
             abnormal=["Watery", "Mucoid"]),
         opt("SBLOOD", "Visible blood", ["Nil", "Present"], abnormal=["Present"]),
         text("SPUS", "Pus cells", "/HPF"),
         text("SRBC", "Red cells", "/HPF"),
         text("OVA", "Ova / cysts")),

    # --- microbiology ------------------------------------------------------------------
    test("UCS", "Urine culture and sensitivity", "urine", "microbiology",
         text("UCS", "Culture and sensitivity report")),
    test("BCS", "Blood culture and sensitivity", "whole_blood", "microbiology",
         text("BCS", "Culture and sensitivity report")),
    test("AFB", "AFB smear (Ziehl-Neelsen)", "sputum", "microbiology",
         opt("AFB", "Acid-fast bacilli", ["No AFB seen", "Scanty", "1+", "2+", "3+"],
             abnormal=["Scanty", "1+", "2+", "3+"])),
    test("GXPERT", "GeneXpert MTB/RIF", "sputum", "microbiology",
         opt("MTB", "MTB / rifampicin", ["MTB not detected", "MTB detected, RIF resistance not detected",
                                         "MTB detected, RIF resistance detected", "Invalid / error"],
             abnormal=["MTB detected, RIF resistance not detected"],
             critical=["MTB detected, RIF resistance detected"])),
]


def load(session: Session, actor: Actor | None = None) -> list[str]:
    """Add the demo tests that are missing (matched by code); one summary line."""
    actor = actor or Actor.system("demo")
    existing = set(session.scalars(select(LabTest.code)))
    created = 0
    for spec in CATALOGUE:
        if spec["code"] in existing:
            continue
        services.create_test(session, actor, spec)
        created += 1
    session.flush()
    return [f"lab tests: {created} created, {len(CATALOGUE) - created} already present"]
