import asyncio
import base64
import io
import json
import threading
import uuid
from datetime import date
from pathlib import Path

import pytest
from fpdf import FPDF
from hypothesis import given
from hypothesis import strategies as st
from pypdf import PdfReader, PdfWriter

from agentrunner.agents import get_agent
from agentrunner.agents.base import AsyncAgentContext, InvalidAgentInput, NonRetryableAgentError, OnBusy
from agentrunner.agents.builtin import document_extractor
from agentrunner.agents.builtin.document_extractor import FIELDS, DocumentExtractorAgent, extract_fields

SAMPLES = Path(__file__).resolve().parents[2] / "samples"

POLICY_LINES = [
    "Nordhafen Versicherung AG - Policy Schedule",
    "Policy Number: PL-2025-004211",
    "Named Insured: Acme Logistics GmbH",
    "Effective Date: 2025-01-01",
    "Expiry Date: 31 December 2025",
    "Total Premium: \u20ac 12,450.00",
    "Limit of Liability: EUR 2,000,000 each occurrence",
    "Currency: EUR",
    "The Insured shall notify the Insurer of any occurrence within 30 days.",
]
POLICY_FIELDS = {
    "policy_number": "PL-2025-004211",
    "insured_name": "Acme Logistics GmbH",
    "effective_date": "2025-01-01",
    "expiry_date": "2025-12-31",
    "premium": 12450.0,
    "coverage_limit": 2000000.0,
    "currency": "EUR",
}


def make_pdf(*pages: list[str]) -> bytes:
    """Write a real PDF with one page per list of lines."""
    pdf = FPDF()
    pdf.core_fonts_encoding = "windows-1252"  # for the euro sign
    pdf.set_font("Helvetica", size=11)
    for lines in pages:
        pdf.add_page()
        for line in lines:
            pdf.cell(0, 8, line, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def encrypt(pdf: bytes, *, user_password: str) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    writer.encrypt(user_password=user_password, owner_password="owner", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def run_agent(data: dict) -> dict:
    agent = DocumentExtractorAgent()
    context = AsyncAgentContext(run_id=uuid.uuid4(), step_name="x", attempt=1, input=agent.validate_input(data))
    output = asyncio.run(agent.run(context))  # the rules touch no database: a loop of its own will do
    json.dumps(output)  # the engine stores outputs as JSON
    return output


def fields_of(text: str) -> dict:
    return extract_fields(text)[0]


def test_document_extractor__is_registered_with_one_run_at_a_time_rejecting_others():
    agent = get_agent("document-extractor")

    assert isinstance(agent, DocumentExtractorAgent)
    assert agent.concurrency.limit == 1
    assert agent.concurrency.on_busy == OnBusy.REJECT
    assert agent.is_async()


def test_document_extractor__parses_in_threads_not_on_the_event_loop(monkeypatch):
    """Reading a PDF and running the rules are CPU work: other steps on the worker's loop must go on meanwhile."""
    threads = []

    def watched(function):
        def call(*args):
            threads.append(threading.current_thread())
            return function(*args)

        return call

    monkeypatch.setattr(document_extractor, "document_text", watched(document_extractor.document_text))
    monkeypatch.setattr(document_extractor, "extract_fields", watched(document_extractor.extract_fields))

    output = run_agent({"pdf_base64": b64(make_pdf(POLICY_LINES))})

    assert output["fields"] == POLICY_FIELDS
    assert len(threads) == 2
    assert threading.current_thread() not in threads  # asyncio.run ran the loop in this thread


def test_document_extractor__pdf_yields_every_field():
    pdf = make_pdf(POLICY_LINES)

    output = run_agent({"pdf_base64": b64(pdf), "filename": "policy.pdf"})

    assert output["fields"] == POLICY_FIELDS
    assert output["confidence"] == {
        "policy_number": 0.95,
        "insured_name": 0.95,
        "effective_date": 0.95,
        "expiry_date": 0.95,
        "premium": 0.95,
        "coverage_limit": 0.95,
        "currency": 0.95,
    }
    assert output["missing"] == []
    assert output["source"] == "pdf"
    assert output["pages"] == 1
    assert output["characters"] == len(PdfReader(io.BytesIO(pdf)).pages[0].extract_text())


def test_document_extractor__pdf_pages_are_all_read_and_counted():
    pdf = make_pdf(POLICY_LINES[:4], ["Schedule continued"], POLICY_LINES[4:])

    output = run_agent({"pdf_base64": b64(pdf)})

    assert output["fields"] == POLICY_FIELDS
    assert output["pages"] == 3


def test_document_extractor__text_yields_every_field_without_a_page_count():
    text = "\n".join(POLICY_LINES)

    output = run_agent({"text": text})

    assert output["fields"] == POLICY_FIELDS
    assert output["missing"] == []
    assert output["source"] == "text"
    assert "pages" not in output
    assert output["characters"] == len(text)


def test_document_extractor__missing_fields_are_null_with_zero_confidence():
    output = run_agent({"text": "Policy Number: PL-1\nNamed Insured: Jane Doe\nSome unrelated words."})

    assert output["fields"]["policy_number"] == "PL-1"
    assert output["fields"]["insured_name"] == "Jane Doe"
    missing = ["effective_date", "expiry_date", "premium", "coverage_limit", "currency"]
    assert output["missing"] == missing
    for name in missing:
        assert output["fields"][name] is None
        assert output["confidence"][name] == 0.0


def test_document_extractor__text_with_no_fields_reports_every_field_missing():
    output = run_agent({"text": ""})

    assert output["fields"] == dict.fromkeys(FIELDS)
    assert output["missing"] == list(FIELDS)
    assert output["characters"] == 0


@pytest.mark.parametrize(
    "written",
    [
        "2025-01-31",
        "2025/01/31",
        "31/01/2025",
        "01/31/2025",
        "31-01-2025",
        "31.01.2025",
        "January 31, 2025",
        "Jan 31st, 2025",
        "31 January 2025",
        "31 Jan. 2025",
        "31-Jan-2025",
    ],
)
def test_document_extractor__unambiguous_date_formats_become_iso(written):
    fields, confidence = extract_fields(f"Effective Date: {written}")

    assert fields["effective_date"] == "2025-01-31"
    assert confidence["effective_date"] == 0.95


def test_document_extractor__ambiguous_numeric_date_is_read_day_first_with_low_confidence():
    fields, confidence = extract_fields("Effective Date: 01/02/2025")

    assert fields["effective_date"] == "2025-02-01"
    assert confidence["effective_date"] == 0.6


def test_document_extractor__ambiguous_date_follows_the_documents_other_dates():
    fields, confidence = extract_fields("Effective Date: 01/02/2025\nExpiry Date: 12/31/2025")

    assert fields["effective_date"] == "2025-01-02"
    assert confidence["effective_date"] == 0.8
    assert fields["expiry_date"] == "2025-12-31"
    assert confidence["expiry_date"] == 0.95


def test_document_extractor__dotted_date_is_day_first():
    fields, confidence = extract_fields("Effective Date: 01.02.2025")

    assert fields["effective_date"] == "2025-02-01"
    assert confidence["effective_date"] == 0.95


def test_document_extractor__impossible_date_is_missing():
    assert fields_of("Effective Date: 31/02/2025\nExpiry Date: 2025-13-01")["effective_date"] is None
    assert fields_of("Expiry Date: 2025-13-01")["expiry_date"] is None


def test_document_extractor__policy_period_gives_both_dates():
    fields, confidence = extract_fields("Period from 1 March 2025 to 28 February 2026")

    assert fields["effective_date"] == "2025-03-01"
    assert fields["expiry_date"] == "2026-02-28"
    assert confidence["expiry_date"] == 0.9


@pytest.mark.parametrize(
    ("written", "amount", "currency", "currency_confidence"),
    [
        ("1,250.00", 1250.0, None, 0.0),
        ("1250", 1250.0, None, 0.0),
        ("$1,250", 1250.0, "USD", 0.65),
        ("\u20ac 2,000,000", 2000000.0, "EUR", 0.65),
        ("\u00a3750.50", 750.5, "GBP", 0.65),
        ("EUR 12,450.00", 12450.0, "EUR", 0.85),
        ("12,450.00 CHF", 12450.0, "CHF", 0.85),
        ("US$ 1,000", 1000.0, "USD", 0.85),
    ],
)
def test_document_extractor__amount_formats_give_the_number_and_currency(
    written, amount, currency, currency_confidence
):
    fields, confidence = extract_fields(f"Premium: {written}")

    assert fields["premium"] == amount
    assert confidence["premium"] == 0.95
    assert fields["currency"] == currency
    assert confidence["currency"] == currency_confidence


@pytest.mark.parametrize("written", ["EUR 1.000.000", "1,25", "10% of turnover", "see schedule"])
def test_document_extractor__amounts_it_cannot_read_safely_are_missing(written):
    assert fields_of(f"Sum Insured: {written}")["coverage_limit"] is None


def test_document_extractor__explicit_currency_line_wins_over_symbols():
    fields, confidence = extract_fields("Total Premium: $1,250\nCurrency: CAD")

    assert fields["currency"] == "CAD"
    assert confidence["currency"] == 0.95


@pytest.mark.parametrize(
    ("written", "code"), [("eur", "EUR"), ("Euro", "EUR"), ("US Dollars", "USD"), ("\u00a3", "GBP")]
)
def test_document_extractor__currency_line_accepts_names_symbols_and_lowercase_codes(written, code):
    assert fields_of(f"Currency: {written}")["currency"] == code


@pytest.mark.parametrize(
    ("line", "field", "value"),
    [
        ("Policy No. AB-123", "policy_number", "AB-123"),
        ("Policy #: 99887766", "policy_number", "99887766"),
        ("Policy Number - X/2025/17", "policy_number", "X/2025/17"),
        ("Insured: Jane Doe", "insured_name", "Jane Doe"),
        ("Policyholder: Smith & Sons Ltd.", "insured_name", "Smith & Sons Ltd."),
        ("Name of Insured: Bob's Bakery", "insured_name", "Bob's Bakery"),
        ("Start Date: 2025-01-01", "effective_date", "2025-01-01"),
        ("Inception Date: 2025-01-01", "effective_date", "2025-01-01"),
        ("Expiration Date: 2025-12-31", "expiry_date", "2025-12-31"),
        ("End Date: 2025-12-31", "expiry_date", "2025-12-31"),
        ("Annual Premium: 900", "premium", 900.0),
        ("Premium 900", "premium", 900.0),
        ("Coverage Limit: 1,000,000", "coverage_limit", 1000000.0),
        ("Sum Insured: 500,000", "coverage_limit", 500000.0),
        ("Limit of Indemnity: 250,000", "coverage_limit", 250000.0),
        ("1. Policy Number: N-42", "policy_number", "N-42"),
        ("- Named Insured: Bullet Co", "insured_name", "Bullet Co"),
    ],
)
def test_document_extractor__label_synonyms_are_recognised(line, field, value):
    fields, confidence = extract_fields(line)

    assert fields[field] == value
    assert confidence[field] == 0.95


@pytest.mark.parametrize(
    "text",
    [
        "Sum Insured: 5,000,000",
        "Additional Insured: Port Authority",
        "Insured Address: Hafenstrasse 12",
        "The Insured shall notify the insurer.",
        "Insured persons are covered worldwide.",
    ],
)
def test_document_extractor__look_alike_labels_are_not_the_insureds_name(text):
    assert fields_of(text)["insured_name"] is None


def test_document_extractor__premium_tax_is_not_the_premium():
    assert fields_of("Insurance Premium Tax (19%): EUR 2,365.50\nPremium Tax: 100")["premium"] is None


def test_document_extractor__first_labelled_value_wins():
    assert fields_of("Total Premium: 1,000\nPremium: 2,000")["premium"] == 1000.0


def test_document_extractor__two_labels_on_one_line_are_both_read():
    fields = fields_of("Effective Date: 2025-01-01 Expiry Date: 2025-12-31 Currency: GBP")

    assert fields["effective_date"] == "2025-01-01"
    assert fields["expiry_date"] == "2025-12-31"
    assert fields["currency"] == "GBP"


def test_document_extractor__value_on_the_line_after_its_label_is_read_with_lower_confidence():
    fields, confidence = extract_fields("Named Insured:\n\nAcme Logistics GmbH\nPolicy Number:\nPL-7")

    assert fields["insured_name"] == "Acme Logistics GmbH"
    assert confidence["insured_name"] == 0.9
    assert fields["policy_number"] == "PL-7"


def test_document_extractor__line_wrapped_base64_is_accepted():
    encoded = b64(make_pdf(POLICY_LINES))
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))

    assert run_agent({"pdf_base64": wrapped})["fields"] == POLICY_FIELDS


@pytest.mark.parametrize("encoded", ["not base64!!", "aGVsbG8", "%PDF-1.7"])
def test_document_extractor__invalid_base64_is_a_non_retryable_error(encoded):
    with pytest.raises(NonRetryableAgentError, match="not valid base64"):
        run_agent({"pdf_base64": encoded})


def test_document_extractor__base64_of_something_else_than_a_pdf_is_a_non_retryable_error():
    with pytest.raises(NonRetryableAgentError, match="does not hold a PDF"):
        run_agent({"pdf_base64": b64(b"Policy Number: PL-1, but plain text")})


@pytest.mark.parametrize(
    "damage",
    [
        lambda pdf: pdf[: len(pdf) // 2],
        lambda pdf: b"%PDF-1.7\n" + bytes(range(256)) * 8,
        lambda pdf: pdf[:200],
    ],
    ids=["truncated", "garbage-after-header", "header-only"],
)
def test_document_extractor__corrupt_pdf_is_a_non_retryable_error(damage):
    with pytest.raises(NonRetryableAgentError, match="could not be read"):
        run_agent({"pdf_base64": b64(damage(make_pdf(POLICY_LINES)))})


def test_document_extractor__password_protected_pdf_is_a_non_retryable_error():
    pdf = encrypt(make_pdf(POLICY_LINES), user_password="secret")

    with pytest.raises(NonRetryableAgentError, match="encrypted"):
        run_agent({"pdf_base64": b64(pdf)})


def test_document_extractor__pdf_encrypted_without_a_user_password_is_read():
    pdf = encrypt(make_pdf(POLICY_LINES), user_password="")

    assert run_agent({"pdf_base64": b64(pdf)})["fields"] == POLICY_FIELDS


def test_document_extractor__pdf_without_text_is_a_non_retryable_error():
    pdf = FPDF()
    pdf.add_page()
    pdf.rect(10, 10, 50, 50)  # a drawing, as a scanned page would be an image

    with pytest.raises(NonRetryableAgentError, match="no extractable text"):
        run_agent({"pdf_base64": b64(bytes(pdf.output()))})


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"filename": "policy.pdf"},
        {"text": "Policy Number: PL-1", "pdf_base64": "JVBERi0="},
        {"text": 42},
        {"pdf_base64": ""},
        {"text": "x", "colour": "blue"},
    ],
    ids=["neither", "filename-only", "both", "text-not-a-string", "empty-pdf", "unknown-property"],
)
def test_document_extractor__input_schema_rejects_anything_but_exactly_one_document(data):
    with pytest.raises(InvalidAgentInput):
        DocumentExtractorAgent().validate_input(data)


def test_document_extractor__input_schema_errors_do_not_quote_the_document():
    document = "Policy Number: PL-1 " * 1000

    with pytest.raises(InvalidAgentInput) as error:
        DocumentExtractorAgent().validate_input({"text": document, "pdf_base64": b64(document.encode())})

    assert len(str(error.value)) < 200


@pytest.mark.parametrize("data", [{"text": "x"}, {"pdf_base64": "JVBERi0=", "filename": "a.pdf"}])
def test_document_extractor__input_schema_accepts_text_or_pdf(data):
    assert DocumentExtractorAgent().validate_input(data) == data


def test_document_extractor__sample_policy_pdf_and_text_yield_the_sample_claims_fields():
    expected = json.loads((SAMPLES / "claim.json").read_text())["fields"]
    pdf = (SAMPLES / "policy.pdf").read_bytes()
    text = (SAMPLES / "policy.txt").read_text()

    assert run_agent({"pdf_base64": b64(pdf), "filename": "policy.pdf"})["fields"] == expected
    assert run_agent({"text": text})["fields"] == expected


@given(st.text(max_size=2000))
def test_document_extractor__any_text_gives_a_well_formed_result(text):
    fields, confidence = extract_fields(text)

    assert list(fields) == list(FIELDS)
    assert list(confidence) == list(FIELDS)
    for name in FIELDS:
        assert 0.0 <= confidence[name] <= 1.0
        assert (fields[name] is None) == (confidence[name] == 0.0)


@given(st.dates(min_value=date(1900, 1, 1), max_value=date(2199, 12, 31)))
def test_document_extractor__every_written_form_of_a_date_reads_back(day):
    forms = [
        day.isoformat(),
        f"{day.day:02d}.{day.month:02d}.{day.year}",
        day.strftime("%B %d, %Y"),
        day.strftime("%d %b %Y"),
    ]
    for form in forms:
        assert fields_of(f"Expiry Date: {form}")["expiry_date"] == day.isoformat(), form
