"""The bill receipt as a PDF (fpdf2, core fonts, A5 portrait).

`receipt_pdf(data)` takes the display dict of finance.services.receipt (strings already
formatted: hospital-local times, "PKR 1,234.00") and returns the PDF bytes. Core fonts
cover Latin-1 only: any other character (an Urdu name, say) is printed as "?" rather than
failing the receipt.
"""

from __future__ import annotations

from fpdf import FPDF
from fpdf.enums import XPos, YPos

TITLE = "HMS - Bill and payment receipt"
A5_MM = (148, 210)  # given in mm: fpdf2 warns whenever the "A5" name is used


def _latin1(value) -> str:
    return str(value).encode("latin-1", "replace").decode("latin-1")


class _ReceiptPDF(FPDF):
    def footer(self) -> None:
        self.set_y(-10)
        self.set_font("Helvetica", size=7)
        self.set_text_color(110)
        self.cell(0, 5, f"Page {self.page_no()}/{{nb}}", align="C")


def _document(page_format, title: str, margin: int) -> "_ReceiptPDF":
    """A new one-page-so-far document with the page-number footer."""
    pdf = _ReceiptPDF(orientation="P", unit="mm", format=page_format)
    pdf.set_title(_latin1(title))
    pdf.set_author("HMS")
    pdf.set_margins(margin, margin, margin)
    pdf.set_auto_page_break(auto=True, margin=14)
    pdf.alias_nb_pages()
    pdf.add_page()
    return pdf


def receipt_pdf(data: dict) -> bytes:
    """Render the receipt of one bill; returns the bytes of a PDF document."""
    pdf = _document(A5_MM, f"Receipt {data['bill_no']}", 10)
    width = pdf.epw

    pdf.set_font("Helvetica", "B", 13)
    pdf.cell(width, 7, TITLE, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", size=8)
    pdf.set_text_color(90)
    pdf.cell(width, 4, _latin1(f"Printed {data['printed_at']} ({data['timezone']})"),
             new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_text_color(0)
    pdf.ln(2)

    facts = [("MRN", data["mrn"]), ("Patient", data["patient_name"]), ("Bill no", data["bill_no"]),
             ("Bill date", data["bill_date"]), ("Payer", data["payer_class"]), ("Status", data["status"])]
    for label, value in facts:
        pdf.set_font("Helvetica", "B", 9)
        pdf.cell(22, 5, label)
        pdf.set_font("Helvetica", size=9)
        pdf.multi_cell(width - 22, 5, _latin1(value), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(3)

    pdf.set_font("Helvetica", size=8.5)
    if data["lines"]:
        with pdf.table(col_widths=(58, 10, 30, 30), text_align=("LEFT", "RIGHT", "RIGHT", "RIGHT"),
                       line_height=4.6, first_row_as_headings=True) as table:
            table.row(["Item", "Qty", "Unit price", "Amount"])
            for line in data["lines"]:
                text = line["description"]
                if line["note"] == "reversal":
                    text = f"Reversal: {text}" + (f" ({line['reason']})" if line["reason"] else "")
                elif line["note"] == "reversed":
                    text = f"{text} (reversed)"
                table.row([_latin1(text), str(line["quantity"]), line["unit_price"], line["amount"]])
    else:
        pdf.cell(width, 5, "No charges on this bill.", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(2)

    for label, value, bold in (("Total", data["total"], False), ("Paid", data["paid"], False),
                               ("Balance", data["balance"], True)):
        pdf.set_font("Helvetica", "B" if bold else "", 10 if bold else 9)
        pdf.cell(width - 40, 5.5, label, align="R")
        pdf.cell(40, 5.5, _latin1(value), align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(3)

    pdf.set_font("Helvetica", "B", 10)
    pdf.cell(width, 6, "Payments", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", size=8.5)
    if data["payments"]:
        with pdf.table(col_widths=(22, 30, 46, 30), text_align=("LEFT", "LEFT", "LEFT", "RIGHT"),
                       line_height=4.6, first_row_as_headings=True) as table:
            table.row(["Receipt", "Date", "Method / reference", "Amount"])
            for p in data["payments"]:
                method = p["method"] + (f" {p['reference']}" if p["reference"] else "")
                table.row([p["receipt_no"], p["at"], _latin1(method), p["amount"]])
    else:
        pdf.cell(width, 5, "No payments yet.", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    return bytes(pdf.output())


def final_bill_pdf(data: dict) -> bytes:
    """Render the final (or interim) inpatient bill of finance.services.final_bill: A4,
    every line with its source, totals with the payer split, credit notes, the version."""
    pdf = _document("A4", f"{data['stage'].title()} bill {data['bill_no']}", 12)
    width = pdf.epw

    pdf.set_font("Helvetica", "B", 15)
    version = f" - version {data['version']}" if data["version"] else ""
    pdf.cell(width, 8, _latin1(f"HMS - {data['stage']} BILL{version}"), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", size=8)
    pdf.set_text_color(90)
    pdf.cell(width, 4, _latin1(f"Printed {data['printed_at']} ({data['timezone']})"),
             new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_text_color(0)
    pdf.ln(2)
    facts = [("MRN", data["mrn"]), ("Patient", data["patient_name"]), ("Bill no", data["bill_no"]),
             ("Opened", data["bill_date"]), ("Closed", data["closed_at"] or "-"), ("Payer", data["payer_class"]),
             ("Verification", data["verification_ref"] or "-"), ("Package", data["package"] or "-"),
             ("Gate pass", data["gate_pass_no"] or "-")]
    for label, value in facts:
        pdf.set_font("Helvetica", "B", 9)
        pdf.cell(26, 5, label)
        pdf.set_font("Helvetica", size=9)
        pdf.multi_cell(width - 26, 5, _latin1(value), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(3)
    pdf.set_font("Helvetica", size=8.5)
    if data["lines"]:
        with pdf.table(col_widths=(70, 40, 12, 32, 32), text_align=("LEFT", "LEFT", "RIGHT", "RIGHT", "RIGHT"),
                       line_height=4.6, first_row_as_headings=True) as table:
            table.row(["Item", "Source", "Qty", "Unit price", "Amount"])
            for line in data["lines"]:
                text = line["description"] + (f" ({line['reason']})" if line["reason"] else "")
                table.row([_latin1(text), _latin1(line["source"]), str(line["quantity"]), line["unit_price"],
                           line["amount"]])
    else:
        pdf.cell(width, 5, "No charges on this bill.", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(2)
    for label, value in data["totals"]:
        bold = label in ("Net", "Patient balance")
        pdf.set_font("Helvetica", "B" if bold else "", 10 if bold else 9)
        pdf.cell(width - 45, 5.5, _latin1(label), align="R")
        pdf.cell(45, 5.5, _latin1(value), align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    if data["credit_notes"]:
        pdf.ln(3)
        pdf.set_font("Helvetica", "B", 10)
        pdf.cell(width, 6, "Credit notes", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_font("Helvetica", size=8.5)
        for note in data["credit_notes"]:
            pdf.multi_cell(width, 4.6, _latin1(f"{note['no']} (version {note['version']}): {note['amount']} - "
                                               f"{note['reason']}"), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    return bytes(pdf.output())
