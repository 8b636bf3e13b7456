"""The lab report as a PDF (fpdf2, core fonts only: no font files to ship).

`render_report(view, tz)` takes what services.report returns (verified results only) and
returns the PDF bytes. Core fonts are Latin-1: other characters are transliterated
(en dash -> "-") or replaced with "?", never dropped silently.
"""

from __future__ import annotations

from datetime import datetime, tzinfo

from fpdf import FPDF
from fpdf.enums import XPos, YPos


_TRANSLITERATE = str.maketrans({"\u2013": "-", "\u2014": "-", "\u2018": "'", "\u2019": "'", "\u201c": '"',
                                "\u201d": '"', "\u2264": "<=", "\u2265": ">=", "\u2026": "...",
                                "\u00a0": " ", "\u2082": "2", "\u207b": "-", "\u00b9": "1"})
# Column widths (mm) of the results table on A4 with 10 mm margins: 190 mm in all.
_COLUMNS = (("Test / analyte", 62), ("Result", 30), ("Units", 26), ("Reference range", 40), ("Flag", 32))
_FLAG_TEXT = {"L": "Low", "H": "High", "A": "Abnormal", "LL": "CRITICAL LOW", "HH": "CRITICAL HIGH",
              "AA": "CRITICAL"}


def latin1(text: object) -> str:
    """Text the core fonts can draw."""
    value = "" if text is None else str(text)
    return value.translate(_TRANSLITERATE).encode("latin-1", "replace").decode("latin-1")


def _when(value: datetime | None, tz: tzinfo) -> str:
    return value.astimezone(tz).strftime("%d %b %Y %H:%M") if value else "-"


class _Report(FPDF):
    footer_text = ""

    def footer(self):
        self.set_y(-12)
        self.set_font("Helvetica", "", 7)
        self.set_text_color(90, 90, 90)
        self.cell(0, 5, latin1(self.footer_text), new_x=XPos.RIGHT, new_y=YPos.TOP)
        self.cell(0, 5, f"Page {self.page_no()}/{{nb}}", align="R")
        self.set_text_color(0, 0, 0)


def render_report(view: dict, tz: tzinfo, printed_at: datetime | None = None) -> bytes:
    """The report of services.report(...) as PDF bytes (starts with %PDF)."""
    order, patient, names = view["order"], view["patient"], view["names"]
    printed_at = printed_at or datetime.now(tz)
    doc = _Report(format="A4")
    doc.alias_nb_pages()
    doc.set_margins(10, 10, 10)
    doc.set_auto_page_break(True, margin=16)
    doc.footer_text = (f"{order.order_no} - verified results only - printed {_when(printed_at, tz)} "
                       f"({getattr(tz, 'key', str(tz))})")
    doc.set_title(latin1(f"Lab report {order.order_no}"))
    doc.add_page()

    doc.set_font("Helvetica", "B", 14)
    doc.cell(0, 8, latin1(view["title"]), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    doc.set_font("Helvetica", "", 10)
    doc.cell(0, 6, "Laboratory report", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    doc.ln(2)

    ordered_by = names.get(order.ordered_by_id) if order.ordered_by_id else None
    pairs = [
        ("MRN", patient.mrn), ("Patient", patient.name),
        ("Age / sex", f"{view['age']} / {patient.sex.capitalize()}"), ("Order", order.order_no),
        ("Ordered", _when(order.ordered_at, tz)),
        ("Ordered by", f"{ordered_by} (user {order.ordered_by_id})" if ordered_by else "-"),
        ("Priority", order.priority.upper()),
    ]
    for label, value in pairs:
        doc.set_font("Helvetica", "B", 9)
        doc.cell(28, 5, latin1(label))
        doc.set_font("Helvetica", "", 9)
        doc.cell(0, 5, latin1(value), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    if view["critical"]:
        doc.ln(1)
        doc.set_font("Helvetica", "B", 10)
        doc.set_text_color(180, 20, 20)
        doc.cell(0, 6, "CRITICAL VALUES ON THIS REPORT", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        doc.set_text_color(0, 0, 0)
    doc.ln(2)

    reported = [i for i in view["items"] if i["reportable"]]
    pending = [i for i in view["items"] if not i["reportable"] and i["status"] != "cancelled"]
    if not reported:
        doc.set_font("Helvetica", "I", 10)
        doc.multi_cell(0, 6, "No results have been verified yet.", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    else:
        _header_row(doc)
    for entry in reported:
        _item(doc, entry, names, tz)
    if reported and order.report_comment:
        doc.ln(2)
        doc.set_font("Helvetica", "B", 9)
        doc.cell(0, 5, "Pathologist's comment", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        doc.set_font("Helvetica", "", 9)
        doc.multi_cell(0, 4.5, latin1(order.report_comment), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    if pending:
        doc.ln(2)
        doc.set_font("Helvetica", "", 9)
        doc.multi_cell(0, 5, latin1("Pending: " + ", ".join(f"{i['test'].name} ({i['status_label'].lower()})"
                                                             for i in pending)),
                       new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    return bytes(doc.output())


def _header_row(doc: FPDF) -> None:
    doc.set_font("Helvetica", "B", 8)
    doc.set_fill_color(230, 234, 238)
    for title, width in _COLUMNS:
        doc.cell(width, 6, title, border="B", fill=True)
    doc.ln(6)


def _fitted_cell(doc: FPDF, width: float, text: str, style: str, size: float = 9, smallest: float = 6.5) -> None:
    """One table cell: the font shrinks (down to `smallest`) so the text fits its column;
    only what still does not fit is cut, marked with "...". """
    doc.set_font("Helvetica", style, size)
    room = width - 1.5
    if doc.get_string_width(text) > room:
        doc.set_font("Helvetica", style, max(smallest, size * room / doc.get_string_width(text)))
        while len(text) > 1 and doc.get_string_width(text) > room:
            text = text[:-4] + "..."
    doc.cell(width, 5, text)
    doc.set_font("Helvetica", style, size)


def _item(doc: FPDF, entry: dict, names: dict, tz: tzinfo) -> None:
    item, test, sample = entry["item"], entry["test"], entry["sample"]
    if doc.will_page_break(20):
        doc.add_page()
        _header_row(doc)
    doc.ln(1)
    doc.set_font("Helvetica", "B", 9)
    title = f"{test.name} ({test.code})" + ("   AMENDED" if entry["amended"] else "")
    doc.cell(0, 5, latin1(title), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    doc.set_font("Helvetica", "", 7.5)
    verifiers = ", ".join(names.get(u, f"user {u}") for u in entry["verified_by_ids"]) or "-"
    doc.cell(0, 4, latin1(f"Sample {sample.label if sample else '-'} - collected {_when(item.collected_at, tz)} - "
                          f"verified {_when(entry['last_verified_at'], tz)} by {verifiers}"),
             new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    for row in entry["results"]:
        result, analyte = row["result"], row["analyte"]
        if result is None:
            continue
        flag = result.flag
        doc.set_font("Helvetica", "B" if flag else "", 9)
        if result.critical:
            doc.set_text_color(180, 20, 20)
        cells = (f"  {analyte.name}", result.value_text, result.units or "", result.ref_text or "",
                 _FLAG_TEXT.get(flag, "") if flag else "")
        for (_title, width), text in zip(_COLUMNS, cells):
            _fitted_cell(doc, width, latin1(text), "B" if flag else "")
        doc.ln(5)
        doc.set_text_color(0, 0, 0)
        if row["amended"] or row["amendment_pending"]:
            doc.set_font("Helvetica", "I", 7.5)
            notes = []
            if row["amended"]:
                earlier = [v for v in row["versions"] if v.version < result.version]
                notes.append(f"AMENDED (version {result.version}): {result.amend_reason or ''}")
                notes += [f"Version {v.version}: {v.value_text} {v.units or ''} "
                          f"(verified {_when(v.verified_at, tz)})" for v in earlier]
            if row["amendment_pending"]:
                notes.append("A correction of this result awaits verification.")
            for note in notes:
                doc.set_x(doc.l_margin + 6)
                doc.multi_cell(184, 4, latin1(note), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
