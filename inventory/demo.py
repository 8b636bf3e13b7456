"""The demo pharmacy: a formulary of medicines common in Pakistan with opening stock.

`load(session, actor)` adds the items that are missing (matched by code) and, for each
item, an opening-stock receipt (invoice "DEMO-OPEN-<code>") unless it was loaded before,
so running it again changes nothing. Everything goes through inventory.services, which
validates and audits it like any other write.

Every item gets an expired batch (still on the shelf, waiting for a write-off, so the
pages show it and dispensing proves it skips it) and a batch expiring within 90 days;
two items in three also get a long-dated batch, and the others end up at or below their
reorder level. Dates are counted from today (local), quantities and batch numbers from
the item's position in the list: the same day gives the same data.

Prices are PKR retail per unit in paisa (mid-2020s), cost about 82 % of the sale price.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from hms.audit import Actor
from inventory import services
from inventory.models import GoodsReceipt, Item

SUPPLIER = "Opening stock (demo)"
INVOICE_PREFIX = "DEMO-OPEN-"

# code, generic name, brand, form, strength, unit, substance, drug class, sale price (paisa), reorder level
FORMULARY: tuple[tuple, ...] = (
    # analgesics and NSAIDs
    ("PCM500T", "Paracetamol", "Panadol", "tablet", "500 mg", "tablet", "paracetamol", "analgesic", 300, 500),
    ("PCM120S", "Paracetamol", "Calpol", "syrup", "120 mg/5 ml, 90 ml", "bottle", "paracetamol", "analgesic", 9500, 30),
    ("PCM1GIV", "Paracetamol", "Provas", "infusion", "1 g/100 ml", "bag", "paracetamol", "analgesic", 55000, 10),
    ("IBU400T", "Ibuprofen", "Brufen", "tablet", "400 mg", "tablet", "ibuprofen", "nsaid", 700, 300),
    ("IBU100S", "Ibuprofen", "Brufen", "suspension", "100 mg/5 ml, 90 ml", "bottle", "ibuprofen", "nsaid", 12000, 20),
    ("DIC50T", "Diclofenac sodium", "Voltral", "tablet", "50 mg", "tablet", "diclofenac", "nsaid", 900, 200),
    ("DIC75I", "Diclofenac sodium", "Voltral", "injection", "75 mg/3 ml", "ampoule", "diclofenac", "nsaid", 3500, 50),
    ("MEF250C", "Mefenamic acid", "Ponstan", "capsule", "250 mg", "capsule", "mefenamic acid", "nsaid", 500, 200),
    ("NAP550T", "Naproxen sodium", "Synflex", "tablet", "550 mg", "tablet", "naproxen", "nsaid", 1800, 100),
    ("KET30I", "Ketorolac", "Toradol", "injection", "30 mg/ml", "ampoule", "ketorolac", "nsaid", 6000, 30),
    ("ASP75T", "Aspirin", "Loprin", "tablet", "75 mg", "tablet", "aspirin", "nsaid", 150, 300),
    ("TRM50C", "Tramadol", "Tramal", "capsule", "50 mg", "capsule", "tramadol", "opioid", 1500, 100),
    # penicillins
    ("AMX500C", "Amoxicillin", "Amoxil", "capsule", "500 mg", "capsule", "amoxicillin", "penicillin", 1800, 300),
    ("AMX250S", "Amoxicillin", "Amoxil", "suspension", "250 mg/5 ml, 90 ml", "bottle", "amoxicillin", "penicillin",
     16000, 20),
    ("AMC625T", "Co-amoxiclav", "Augmentin", "tablet", "625 mg", "tablet", "amoxicillin + clavulanic acid",
     "penicillin", 5500, 200),
    ("AMC312S", "Co-amoxiclav", "Augmentin", "suspension", "312 mg/5 ml, 90 ml", "bottle",
     "amoxicillin + clavulanic acid", "penicillin", 38000, 15),
    ("FLX500C", "Flucloxacillin", "Floxapen", "capsule", "500 mg", "capsule", "flucloxacillin", "penicillin",
     2500, 100),
    ("AMP500I", "Ampicillin", "Penbritin", "injection", "500 mg", "vial", "ampicillin", "penicillin", 9000, 30),
    ("BPN24I", "Benzathine penicillin", "Penidure LA", "injection", "2.4 MU", "vial", "benzathine benzylpenicillin",
     "penicillin", 30000, 10),
    # cephalosporins, carbapenems
    ("CTX1GI", "Ceftriaxone", "Oxidil", "injection", "1 g", "vial", "ceftriaxone", "cephalosporin", 30000, 50),
    ("CFX400C", "Cefixime", "Cefspan", "capsule", "400 mg", "capsule", "cefixime", "cephalosporin", 7500, 100),
    ("CFX100S", "Cefixime", "Cefspan", "suspension", "100 mg/5 ml, 30 ml", "bottle", "cefixime", "cephalosporin",
     33000, 15),
    ("CEX500C", "Cephalexin", "Keflex", "capsule", "500 mg", "capsule", "cephalexin", "cephalosporin", 2000, 100),
    ("CXM500T", "Cefuroxime axetil", "Zinnat", "tablet", "500 mg", "tablet", "cefuroxime", "cephalosporin", 9000, 60),
    ("MER1GI", "Meropenem", "Meronem", "injection", "1 g", "vial", "meropenem", "carbapenem", 250000, 10),
    # macrolides, quinolones, others
    ("AZI500T", "Azithromycin", "Azomax", "tablet", "500 mg", "tablet", "azithromycin", "macrolide", 9500, 100),
    ("AZI200S", "Azithromycin", "Azomax", "suspension", "200 mg/5 ml, 15 ml", "bottle", "azithromycin", "macrolide",
     32000, 15),
    ("CLA500T", "Clarithromycin", "Klaricid", "tablet", "500 mg", "tablet", "clarithromycin", "macrolide", 9000, 60),
    ("CIP500T", "Ciprofloxacin", "Ciproxin", "tablet", "500 mg", "tablet", "ciprofloxacin", "fluoroquinolone",
     4000, 200),
    ("LEV500T", "Levofloxacin", "Leflox", "tablet", "500 mg", "tablet", "levofloxacin", "fluoroquinolone", 5000, 100),
    ("SXT960T", "Co-trimoxazole", "Septran DS", "tablet", "960 mg", "tablet", "sulfamethoxazole + trimethoprim",
     "sulfonamide", 900, 200),
    ("SXT240S", "Co-trimoxazole", "Septran", "suspension", "240 mg/5 ml, 50 ml", "bottle",
     "sulfamethoxazole + trimethoprim", "sulfonamide", 9500, 20),
    ("MTZ400T", "Metronidazole", "Flagyl", "tablet", "400 mg", "tablet", "metronidazole", "nitroimidazole", 450, 300),
    ("MTZ200S", "Metronidazole", "Flagyl", "suspension", "200 mg/5 ml, 90 ml", "bottle", "metronidazole",
     "nitroimidazole", 9000, 20),
    ("MTZ500IV", "Metronidazole", "Flagyl", "infusion", "500 mg/100 ml", "bag", "metronidazole", "nitroimidazole",
     12000, 30),
    ("DOX100C", "Doxycycline", "Vibramycin", "capsule", "100 mg", "capsule", "doxycycline", "tetracycline", 1500, 100),
    ("NIT100C", "Nitrofurantoin", "Furadantin", "capsule", "100 mg", "capsule", "nitrofurantoin", "nitrofuran",
     1200, 60),
    ("GEN80I", "Gentamicin", "Genticyn", "injection", "80 mg/2 ml", "ampoule", "gentamicin", "aminoglycoside",
     2500, 50),
    # antifungals, antivirals, antiparasitics, TB
    ("FLU150C", "Fluconazole", "Diflucan", "capsule", "150 mg", "capsule", "fluconazole", "azole antifungal", 9000, 50),
    ("CLO1CR", "Clotrimazole", "Canesten", "cream", "1%, 20 g", "tube", "clotrimazole", "azole antifungal", 25000, 12),
    ("NYS-S", "Nystatin", "Nystat", "suspension", "100,000 IU/ml, 30 ml", "bottle", "nystatin", "polyene antifungal",
     18000, 15),
    ("ACV400T", "Acyclovir", "Zovirax", "tablet", "400 mg", "tablet", "acyclovir", "antiviral", 3000, 60),
    ("ALB400T", "Albendazole", "Zentel", "tablet", "400 mg", "tablet", "albendazole", "anthelmintic", 4500, 50),
    ("COA20T", "Artemether + lumefantrine", "Coartem", "tablet", "20/120 mg", "tablet", "artemether + lumefantrine",
     "antimalarial", 6000, 100),
    ("CHQ250T", "Chloroquine phosphate", "Nivaquine", "tablet", "250 mg", "tablet", "chloroquine", "antimalarial",
     300, 100),
    ("PRQ15T", "Primaquine", None, "tablet", "15 mg", "tablet", "primaquine", "antimalarial", 500, 60),
    ("RHZE-T", "Rifampicin + isoniazid + pyrazinamide + ethambutol", "Myrin-P Forte", "tablet",
     "150/75/400/275 mg", "tablet", "rifampicin + isoniazid + pyrazinamide + ethambutol", "antituberculosis",
     2500, 200),
    # stomach and gut
    ("OMP20C", "Omeprazole", "Risek", "capsule", "20 mg", "capsule", "omeprazole", "ppi", 2500, 300),
    ("OMP40I", "Omeprazole", "Risek", "injection", "40 mg", "vial", "omeprazole", "ppi", 30000, 20),
    ("ESO40T", "Esomeprazole", "Nexum", "tablet", "40 mg", "tablet", "esomeprazole", "ppi", 4000, 200),
    ("PAN40T", "Pantoprazole", "Controloc", "tablet", "40 mg", "tablet", "pantoprazole", "ppi", 3500, 100),
    ("DOM10T", "Domperidone", "Motilium", "tablet", "10 mg", "tablet", "domperidone", "antiemetic", 400, 200),
    ("MCP10I", "Metoclopramide", "Maxolon", "injection", "10 mg/2 ml", "ampoule", "metoclopramide", "antiemetic",
     1500, 50),
    ("OND8T", "Ondansetron", "Onset", "tablet", "8 mg", "tablet", "ondansetron", "antiemetic", 3500, 60),
    ("OND8I", "Ondansetron", "Onset", "injection", "8 mg/4 ml", "ampoule", "ondansetron", "antiemetic", 8000, 30),
    ("ORS-SC", "Oral rehydration salts (low osmolarity)", None, "sachet", "20.5 g", "sachet",
     "oral rehydration salts", None, 3000, 300),
    ("ZNC20S", "Zinc sulfate", "Zincat", "syrup", "20 mg/5 ml, 60 ml", "bottle", "zinc sulfate", "mineral", 12000, 30),
    ("LOP2C", "Loperamide", "Imodium", "capsule", "2 mg", "capsule", "loperamide", "antidiarrhoeal", 600, 60),
    ("HYB10T", "Hyoscine butylbromide", "Buscopan", "tablet", "10 mg", "tablet", "hyoscine butylbromide",
     "antispasmodic", 1200, 100),
    ("HYB20I", "Hyoscine butylbromide", "Buscopan", "injection", "20 mg/ml", "ampoule", "hyoscine butylbromide",
     "antispasmodic", 4500, 30),
    ("LAC-S", "Lactulose", "Duphalac", "syrup", "3.35 g/5 ml, 120 ml", "bottle", "lactulose", "laxative", 36000, 10),
    ("ANT-S", "Aluminium hydroxide + magnesium hydroxide + oxetacaine", "Mucaine", "suspension", "120 ml", "bottle",
     "aluminium hydroxide + magnesium hydroxide + oxetacaine", "antacid", 25000, 15),
    # diabetes
    ("MET500T", "Metformin", "Glucophage", "tablet", "500 mg", "tablet", "metformin", "biguanide", 450, 500),
    ("MET850T", "Metformin", "Glucophage", "tablet", "850 mg", "tablet", "metformin", "biguanide", 700, 300),
    ("GLM2T", "Glimepiride", "Amaryl", "tablet", "2 mg", "tablet", "glimepiride", "sulfonylurea", 2400, 200),
    ("GLZ30T", "Gliclazide", "Diamicron MR", "tablet", "30 mg", "tablet", "gliclazide", "sulfonylurea", 2000, 100),
    ("SIT50T", "Sitagliptin", "Januvia", "tablet", "50 mg", "tablet", "sitagliptin", "dpp-4 inhibitor", 9000, 100),
    ("INS30V", "Insulin human 30/70", "Mixtard 30", "injection", "100 IU/ml, 10 ml", "vial", "insulin human",
     "insulin", 160000, 20),
    ("INSRV", "Insulin human regular", "Actrapid", "injection", "100 IU/ml, 10 ml", "vial", "insulin human",
     "insulin", 160000, 10),
    ("INSGP", "Insulin glargine", "Lantus SoloStar", "injection", "100 IU/ml, 3 ml pen", "pen", "insulin glargine",
     "insulin", 320000, 10),
    # heart and blood pressure
    ("AML5T", "Amlodipine", "Norvasc", "tablet", "5 mg", "tablet", "amlodipine", "calcium channel blocker", 3000, 300),
    ("AML10T", "Amlodipine", "Norvasc", "tablet", "10 mg", "tablet", "amlodipine", "calcium channel blocker",
     4800, 100),
    ("LOS50T", "Losartan potassium", "Eziday", "tablet", "50 mg", "tablet", "losartan", "arb", 2000, 300),
    ("VAL80T", "Valsartan", "Diovan", "tablet", "80 mg", "tablet", "valsartan", "arb", 4000, 100),
    ("ATE50T", "Atenolol", "Tenormin", "tablet", "50 mg", "tablet", "atenolol", "beta blocker", 1000, 100),
    ("BIS5T", "Bisoprolol", "Concor", "tablet", "5 mg", "tablet", "bisoprolol", "beta blocker", 1800, 100),
    ("ENA10T", "Enalapril", "Renitec", "tablet", "10 mg", "tablet", "enalapril", "ace inhibitor", 1200, 100),
    ("CAP25T", "Captopril", "Capoten", "tablet", "25 mg", "tablet", "captopril", "ace inhibitor", 600, 60),
    ("HCT25T", "Hydrochlorothiazide", "Esidrex", "tablet", "25 mg", "tablet", "hydrochlorothiazide", "thiazide",
     250, 60),
    ("FUR40T", "Furosemide", "Lasix", "tablet", "40 mg", "tablet", "furosemide", "loop diuretic", 400, 100),
    ("FUR20I", "Furosemide", "Lasix", "injection", "20 mg/2 ml", "ampoule", "furosemide", "loop diuretic", 1500, 30),
    ("SPI25T", "Spironolactone", "Aldactone", "tablet", "25 mg", "tablet", "spironolactone",
     "potassium-sparing diuretic", 1200, 60),
    ("ATV20T", "Atorvastatin", "Lipiget", "tablet", "20 mg", "tablet", "atorvastatin", "statin", 3000, 300),
    ("ROS10T", "Rosuvastatin", "Rovista", "tablet", "10 mg", "tablet", "rosuvastatin", "statin", 3200, 100),
    ("CLP75T", "Clopidogrel", "Lowplat", "tablet", "75 mg", "tablet", "clopidogrel", "antiplatelet", 2500, 100),
    ("ISD5T", "Isosorbide dinitrate", "Isordil", "tablet", "5 mg sublingual", "tablet", "isosorbide dinitrate",
     "nitrate", 300, 60),
    ("WAR5T", "Warfarin", "Uniwarfin", "tablet", "5 mg", "tablet", "warfarin", "anticoagulant", 500, 30),
    # chest and allergy
    ("SAL100INH", "Salbutamol", "Ventolin", "inhaler", "100 mcg/dose, 200 doses", "inhaler", "salbutamol",
     "beta2 agonist", 45000, 20),
    ("SAL2S", "Salbutamol", "Ventolin", "syrup", "2 mg/5 ml, 60 ml", "bottle", "salbutamol", "beta2 agonist",
     8000, 15),
    ("BUF160INH", "Budesonide + formoterol", "Symbicort Turbuhaler", "inhaler", "160/4.5 mcg, 120 doses", "inhaler",
     "budesonide + formoterol", "inhaled corticosteroid", 320000, 5),
    ("MON10T", "Montelukast", "Montiget", "tablet", "10 mg", "tablet", "montelukast", "leukotriene antagonist",
     3500, 100),
    ("CET10T", "Cetirizine", "Zyrtec", "tablet", "10 mg", "tablet", "cetirizine", "antihistamine", 1000, 200),
    ("LOR10T", "Loratadine", "Softin", "tablet", "10 mg", "tablet", "loratadine", "antihistamine", 1200, 100),
    ("CPM4T", "Chlorpheniramine", "Piriton", "tablet", "4 mg", "tablet", "chlorpheniramine", "antihistamine", 150, 100),
    ("FEX120T", "Fexofenadine", "Telfast", "tablet", "120 mg", "tablet", "fexofenadine", "antihistamine", 3000, 60),
    ("HYD-S", "Diphenhydramine + ammonium chloride", "Hydryllin", "syrup", "120 ml", "bottle",
     "diphenhydramine + ammonium chloride", "antihistamine", 12000, 20),
    ("AMB-S", "Ambroxol", "Mucosolvan", "syrup", "15 mg/5 ml, 120 ml", "bottle", "ambroxol", "mucolytic", 15000, 15),
    # steroids
    ("PRD5T", "Prednisolone", "Deltacortril", "tablet", "5 mg", "tablet", "prednisolone", "corticosteroid", 250, 200),
    ("HYC100I", "Hydrocortisone sodium succinate", "Solu-Cortef", "injection", "100 mg", "vial", "hydrocortisone",
     "corticosteroid", 25000, 20),
    ("DEX4I", "Dexamethasone", "Decadron", "injection", "4 mg/ml", "ampoule", "dexamethasone", "corticosteroid",
     2500, 50),
    ("BET-CR", "Betamethasone valerate", "Betnovate", "cream", "0.1%, 15 g", "tube", "betamethasone",
     "corticosteroid", 12000, 10),
    # vitamins, minerals, fluids
    ("FEF-C", "Ferrous sulfate + folic acid", "Fefol", "capsule", "150 mg/0.5 mg", "capsule",
     "ferrous sulfate + folic acid", "iron supplement", 600, 300),
    ("FOL5T", "Folic acid", None, "tablet", "5 mg", "tablet", "folic acid", "vitamin", 150, 200),
    ("CAD-T", "Calcium carbonate + vitamin D3", "Qalsan-D", "tablet", "600 mg/400 IU", "tablet",
     "calcium carbonate + colecalciferol", "calcium supplement", 1500, 200),
    ("NS500", "Sodium chloride 0.9%", None, "infusion", "500 ml", "bag", "sodium chloride", "iv fluid", 12000, 50),
    ("RL1000", "Ringer's lactate", None, "infusion", "1000 ml", "bag", "compound sodium lactate", "iv fluid",
     16000, 50),
    ("D5W500", "Dextrose 5%", None, "infusion", "500 ml", "bag", "glucose", "iv fluid", 11000, 30),
    # obstetrics, anaesthesia, skin, eyes, nervous system
    ("OXY5I", "Oxytocin", "Syntocinon", "injection", "5 IU/ml", "ampoule", "oxytocin", "uterotonic", 2500, 30),
    ("MGS50I", "Magnesium sulfate", None, "injection", "50%, 10 ml", "ampoule", "magnesium sulfate", "anticonvulsant",
     3000, 30),
    ("LID2I", "Lidocaine", "Xylocaine", "injection", "2%, 20 ml", "vial", "lidocaine", "amide local anaesthetic",
     5000, 20),
    ("SSD1CR", "Silver sulfadiazine", "Flamazine", "cream", "1%, 50 g", "tube", "silver sulfadiazine", "sulfonamide",
     18000, 10),
    ("MUP2OI", "Mupirocin", "Bactroban", "ointment", "2%, 15 g", "tube", "mupirocin", "topical antibiotic", 45000, 10),
    ("CHL-ED", "Chloramphenicol", "Chloromycetin", "drops", "0.5% eye drops, 10 ml", "bottle", "chloramphenicol",
     "amphenicol", 8000, 10),
    ("TOB-ED", "Tobramycin", "Tobrex", "drops", "0.3% eye drops, 5 ml", "bottle", "tobramycin", "aminoglycoside",
     30000, 10),
    ("DZP5T", "Diazepam", "Valium", "tablet", "5 mg", "tablet", "diazepam", "benzodiazepine", 300, 60),
    ("SER50T", "Sertraline", "Serlift", "tablet", "50 mg", "tablet", "sertraline", "ssri", 2200, 60),
    ("LTX50T", "Levothyroxine", "Euthyrox", "tablet", "50 mcg", "tablet", "levothyroxine", "thyroid hormone", 250, 100),
    ("CBZ200T", "Carbamazepine", "Tegral", "tablet", "200 mg", "tablet", "carbamazepine", "anticonvulsant", 1000, 60),
    ("VPA500T", "Sodium valproate", "Epival", "tablet", "500 mg", "tablet", "valproate", "anticonvulsant", 2500, 60),
)


def _batches(index: int, code: str, sale: int, reorder: int, today) -> list[dict]:
    """The opening batches of the item at `index`: expired, near expiry, and (two items
    in three) long-dated."""
    cost = max(sale * 82 // 100, 1)
    prefix = code.replace("-", "")[:4]
    near = max(reorder // 2 + (index * 7) % max(reorder // 2, 1), 5)
    lines = [
        {"batch_no": f"{prefix}X{(index * 37) % 900 + 100}", "quantity": max(reorder // 10, 4),
         "expiry": today - timedelta(days=10 + (index * 5) % 50)},
        {"batch_no": f"{prefix}N{(index * 53 + 11) % 900 + 100}", "quantity": near,
         "expiry": today + timedelta(days=30 + (index * 7) % 55)},
    ]
    if index % 3 != 2:
        lines.append({"batch_no": f"{prefix}L{(index * 71 + 29) % 900 + 100}", "quantity": reorder * 2,
                      "expiry": today + timedelta(days=400 + (index * 13) % 300)})
    for line in lines:
        line.update(item_code=code, cost_price_paisa=cost, sale_price_paisa=sale)
    return lines


def load(session: Session, actor: Actor) -> list[str]:
    """Load the demo formulary and its opening stock; one summary line each."""
    existing = set(session.scalars(select(Item.code)))
    created = 0
    for code, generic, brand, form, strength, unit, substance, drug_class, _sale, reorder in FORMULARY:
        if code in existing:
            continue
        services.create_item(session, actor, {
            "code": code, "generic_name": generic, "brand": brand, "form": form, "strength": strength,
            "unit": unit, "substance": substance, "drug_class": drug_class, "reorder_level": reorder})
        created += 1
    loaded = set(session.scalars(select(GoodsReceipt.invoice_no).where(GoodsReceipt.supplier == SUPPLIER)))
    today = services.today_local(session)
    stocked = batches = 0
    for index, (code, *_rest, sale, reorder) in enumerate(FORMULARY):
        if INVOICE_PREFIX + code in loaded:
            continue
        receipt = services.receive_goods(session, actor, supplier=SUPPLIER, invoice_no=INVOICE_PREFIX + code,
                                         lines=_batches(index, code, sale, reorder, today), opening_balance=True)
        stocked += 1
        batches += len(receipt.batches)
    return [f"formulary: {created} items created, {len(FORMULARY) - created} already present",
            f"opening stock: {stocked} items stocked ({batches} batches), "
            f"{len(FORMULARY) - stocked} already stocked"]
