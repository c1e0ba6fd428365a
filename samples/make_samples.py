"""Write the sample policy (policy.pdf, policy.txt) and a policy-checker input (claim.json).

Run from anywhere: `python samples/make_samples.py`. Needs fpdf2 (a test requirement). The output
is deterministic, so re-running it leaves the committed files unchanged.
"""

import json
from datetime import UTC, datetime
from pathlib import Path

from fpdf import FPDF

HERE = Path(__file__).resolve().parent

# The fields the document-extractor should find; claim.json carries them to the policy-checker.
FIELDS = {
    "policy_number": "PL-2025-004211",
    "insured_name": "Acme Logistics GmbH",
    "effective_date": "2025-01-01",
    "expiry_date": "2025-12-31",
    "premium": 12450.0,
    "coverage_limit": 2000000.0,
    "currency": "EUR",
}

HEADER = [
    "NORDHAFEN VERSICHERUNG AG",
    "Commercial Lines - Ballindamm 40, 20095 Hamburg, Germany",
    "COMMERCIAL GENERAL LIABILITY - POLICY DECLARATIONS",
]
# (label, value) rows of the declarations table; the look-alike labels are there on purpose.
ROWS = [
    ("Policy Number:", "PL-2025-004211"),
    ("Named Insured:", "Acme Logistics GmbH"),
    ("Insured Address:", "Hafenstrasse 12, 20457 Hamburg, Germany"),
    ("Broker:", "Elbe Risk Partners GmbH (agency code 7781)"),
    ("Effective Date:", "2025-01-01"),
    ("Expiry Date:", "2025-12-31"),
    ("Period of Insurance:", "2025-01-01 to 2025-12-31, both days inclusive"),
    ("Currency:", "EUR"),
    ("Total Premium:", "EUR 12,450.00"),
    ("Insurance Premium Tax (19%):", "EUR 2,365.50"),
    ("Total Payable:", "EUR 14,815.50"),
    ("Limit of Liability:", "EUR 2,000,000 each occurrence"),
    ("Aggregate Limit:", "EUR 4,000,000"),
    ("Deductible:", "EUR 5,000 each and every claim"),
    ("Territorial Limits:", "European Union, Switzerland, United Kingdom"),
]
BODY = [
    "Coverages",
    "Coverage A - Bodily injury and property damage liability",
    "Coverage B - Personal and advertising injury liability",
    "Coverage C - Products and completed operations",
    "Endorsements: CGL-END-01 Cargo handling; CGL-END-07 Contractual liability",
    "This declarations page forms part of the policy wording CGL-2024.",
    "The Insured shall notify the Insurer of any occurrence within 30 days.",
    "Issued at Hamburg on 2024-12-15 for Nordhafen Versicherung AG.",
]
CLAIM = {
    "fields": FIELDS,
    "check_date": "2025-06-15",
    "claim_amount": 48500.0,
    "claim_currency": "EUR",
}


def policy_lines() -> list[str]:
    return [*HEADER, *(f"{label} {value}" for label, value in ROWS), *BODY]


def policy_pdf() -> bytes:
    pdf = FPDF()
    pdf.set_creation_date(datetime(2024, 12, 15, tzinfo=UTC))  # a fixed date keeps the file reproducible
    pdf.set_title("Policy declarations PL-2025-004211")
    pdf.add_page()
    pdf.set_font("Helvetica", style="B", size=14)
    pdf.cell(0, 8, HEADER[0], new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=10)
    pdf.cell(0, 6, HEADER[1], new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.set_font("Helvetica", style="B", size=12)
    pdf.cell(0, 8, HEADER[2], new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    for label, value in ROWS:
        pdf.set_font("Helvetica", style="B", size=10)
        pdf.cell(60, 7, label)
        pdf.set_font("Helvetica", size=10)
        pdf.cell(0, 7, value, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.set_font("Helvetica", style="B", size=11)
    pdf.cell(0, 7, BODY[0], new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=10)
    for line in BODY[1:]:
        pdf.cell(0, 6, line, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def main() -> None:
    (HERE / "policy.txt").write_text("\n".join(policy_lines()) + "\n", encoding="utf-8")
    (HERE / "policy.pdf").write_bytes(policy_pdf())
    (HERE / "claim.json").write_text(json.dumps(CLAIM, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {HERE / 'policy.txt'}, {HERE / 'policy.pdf'}, {HERE / 'claim.json'}")


if __name__ == "__main__":
    main()
