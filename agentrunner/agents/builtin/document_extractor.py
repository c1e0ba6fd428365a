"""`document-extractor`: pull insurance policy fields out of plain text or a PDF's text layer.

The rules are labelled-line regexes, kept pure (`extract_fields`) so that the LLM-based
extractor (`mode: "llm"`, or `"auto"` when a provider is configured) can fall back to them.

The agent is async: it runs on a worker's event loop beside other steps, so its CPU work (decoding and
parsing the PDF, the regexes) runs in a thread (`asyncio.to_thread`), never on the loop itself.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import re
import unicodedata
from dataclasses import dataclass
from datetime import date

from pypdf import PasswordType, PdfReader

from agentrunner.agents.base import Agent, AsyncAgentContext, ConcurrencyPolicy, NonRetryableAgentError, OnBusy
from agentrunner.agents.registry import register
from agentrunner.llm import LLMGatewayError, acomplete, any_provider_configured

FIELDS = (
    "policy_number",
    "insured_name",
    "effective_date",
    "expiry_date",
    "premium",
    "coverage_limit",
    "currency",
)

MAX_TEXT_CHARS = 1_000_000
MAX_PDF_BYTES = 10 * 1024 * 1024
# Base64 grows data by 4/3; the slack admits line-wrapped base64 (a newline every 76 characters).
MAX_PDF_BASE64_CHARS = MAX_PDF_BYTES * 4 // 3 + MAX_PDF_BYTES // 50

CONFIDENCE_LABELLED = 0.95  # a value right after one of its labels
CONFIDENCE_NEXT_LINE = 0.9  # a label alone on its line, the value on the next one
CONFIDENCE_RANGE_END = 0.9  # the expiry taken as the second date of "Period from ... to ..."
CONFIDENCE_CODE_ON_AMOUNT = 0.85  # currency from "EUR 12,450.00" on the premium or limit line
CONFIDENCE_DOCUMENT_DATE_ORDER = 0.8  # 01/02/2025, read the way other dates in the document are written
CONFIDENCE_SYMBOL = 0.65  # currency from a symbol: "$" is also CAD, AUD, ...
CONFIDENCE_AMBIGUOUS_DATE = 0.6  # 01/02/2025 with nothing to go by, read day first

PERIOD = "period"  # label target: a range whose first date is the effective date, second the expiry

# (label regex, target): target is a field, PERIOD, or None for look-alike labels that must not be
# read as ours ("Sum Insured" is not the insured's name, "Premium Tax" is not the premium).
_LABEL_SPECS: tuple[tuple[str, str | None], ...] = (
    (r"policy\s*(?:no\.?|number|num\.?|#)", "policy_number"),
    (r"policy\s+ref(?:erence)?(?:\s*(?:no\.?|number))?", "policy_number"),
    (r"named\s+insured", "insured_name"),
    (r"name\s+of\s+(?:the\s+)?insured", "insured_name"),
    (r"insured(?:'s)?\s+name", "insured_name"),
    (r"insured(?:\s+party)?", "insured_name"),
    (r"policy\s*-?\s*holder", "insured_name"),
    (r"effective(?:\s+(?:date|from))?", "effective_date"),
    (r"(?:inception|start|commencement)(?:\s+date)?", "effective_date"),
    (r"valid\s+from", "effective_date"),
    (r"(?:expiry|expiration|end)(?:\s+date)?", "expiry_date"),
    (r"expires(?:\s+on)?", "expiry_date"),
    (r"valid\s+(?:until|to)", "expiry_date"),
    (r"period\s+from", PERIOD),
    (r"(?:policy|insurance|coverage)\s+period", PERIOD),
    (r"period\s+of\s+(?:insurance|cover(?:age)?)", PERIOD),
    (r"(?:(?:total|annual|gross|net)\s+)?premium(?:\s+(?:amount|payable))?", "premium"),
    (r"coverage\s+(?:limit|amount)", "coverage_limit"),
    (r"limit\s+of\s+(?:liability|indemnity|insurance|cover(?:age)?)", "coverage_limit"),
    (r"(?:total\s+)?sums?\s+insured", "coverage_limit"),
    (r"policy\s+limit", "coverage_limit"),
    (r"amount\s+of\s+(?:insurance|cover(?:age)?)", "coverage_limit"),
    (r"(?:policy\s+)?currency", "currency"),
    (r"additional\s+insured", None),
    (r"insured(?:'s)?\s+(?:address|location|property)", None),
    (r"(?:insurance\s+)?premium\s+tax", None),
    (r"territorial\s+limits?", None),
)
_LABELS = tuple(
    (re.compile(rf"(?<![A-Za-z]){spec}(?![A-Za-z])", re.IGNORECASE), target) for spec, target in _LABEL_SPECS
)
# A label starts a line (after bullets or numbering like "1." / "a)") or is followed by a colon.
_LINE_START = re.compile(r"\s*(?:(?:[-*\u2022\u00b7]|\(?\w{1,2}[.)])\s*)?")
_COLON_NEXT = re.compile(r"\s*:")
_SEPARATOR = re.compile(r"(?P<sep>\s*[:#\-\u2013\u2014]|\s*\t|\s{2,})?\s*")
_LOOKS_LIKE_LABEL = re.compile(r"[A-Za-z][A-Za-z '\u2019]{0,30}:")

_MONTH = (
    r"jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?"
)
_MONTHS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1
    )
}
_DATE = re.compile(
    r"(?<!\d)(?P<iy>\d{4})(?P<isep>[-/.])(?P<im>\d{1,2})(?P=isep)(?P<id>\d{1,2})(?!\d)"
    r"|(?<!\d)(?P<na>\d{1,2})(?P<nsep>[-/.])(?P<nb>\d{1,2})(?P=nsep)(?P<ny>\d{4})(?!\d)"
    rf"|(?<!\w)(?P<dd>\d{{1,2}})(?:st|nd|rd|th)?[\s-]+(?P<dmon>{_MONTH})(?![a-z])\.?,?[\s-]+(?P<dy>\d{{4}})(?!\d)"
    rf"|(?<!\w)(?P<mmon>{_MONTH})(?![a-z])\.?\s+(?P<md>\d{{1,2}})(?:st|nd|rd|th)?,?\s+(?P<my>\d{{4}})(?!\d)",
    re.IGNORECASE,
)
_NUMERIC_DATE = re.compile(r"(?<!\d)(\d{1,2})([-/])(\d{1,2})\2\d{4}(?!\d)")

# Thousands separated by commas, decimals by a dot; "1.000.000" is refused rather than guessed.
_NUMBER = re.compile(r"(?<![\w.,])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\d%]|[.,]\d|\s*%)")
_CURRENCY_BEFORE = re.compile(r"(?:(?<![A-Za-z])(?P<code>[A-Z]{3})|(?P<symbol>US\$|[$\u20ac\u00a3]))\s*$")
# A code after the number, unless it begins a run of capitals ("2,000,000 ALL CLAIMS").
_CURRENCY_AFTER = re.compile(r"\s*(?:(?P<code>[A-Z]{3})(?![A-Za-z]|\s+[A-Z]{2})|(?P<symbol>[$\u20ac\u00a3]))")
_SYMBOLS = {"$": "USD", "\u20ac": "EUR", "\u00a3": "GBP"}
_CURRENCY_NAMES = (
    (re.compile(r"\beuros?\b", re.IGNORECASE), "EUR"),
    (re.compile(r"\bu\.?s\.?\s+dollars?\b", re.IGNORECASE), "USD"),
    (re.compile(r"\b(?:pounds?\s+sterling|sterling|british\s+pounds?)\b", re.IGNORECASE), "GBP"),
    (re.compile(r"\bswiss\s+francs?\b", re.IGNORECASE), "CHF"),
)
# Active ISO 4217 codes (currencies, not funds or metals).
_ISO_4217_CODES = """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN BWP
    BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR
    FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS
    KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN
    MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR
    SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN
    UYI UYU UYW UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG"""
ISO_4217 = frozenset(_ISO_4217_CODES.split())
MODE_RULES, MODE_LLM, MODE_AUTO = "rules", "llm", "auto"
# The LLM reads the document's beginning only (~10k tokens): schedules state their fields up front,
# and a 1 MB document would cost ~250k tokens per run.
LLM_MAX_DOCUMENT_CHARS = 40_000
LLM_MAX_TOKENS = 600
# The LLM reports no confidence of its own: a value the rules read the same way gets the higher of
# the rules' confidence and this; one the rules found nothing for, or read differently, gets this.
CONFIDENCE_LLM_ONLY = 0.7
_NULLABLE_TEXT = {"type": ["string", "null"], "maxLength": 300}
_NULLABLE_DATE = {"type": ["string", "null"], "pattern": r"^\d{4}-\d{2}-\d{2}$"}
_NULLABLE_AMOUNT = {"type": ["number", "null"], "minimum": 0}
LLM_FIELDS_SCHEMA = {
    "type": "object",
    "properties": {
        "policy_number": _NULLABLE_TEXT,
        "insured_name": _NULLABLE_TEXT,
        "effective_date": _NULLABLE_DATE,
        "expiry_date": _NULLABLE_DATE,
        "premium": _NULLABLE_AMOUNT,
        "coverage_limit": _NULLABLE_AMOUNT,
        "currency": {"type": ["string", "null"], "pattern": "^[A-Z]{3}$"},
    },
    "required": list(FIELDS),
    "additionalProperties": False,
}
LLM_SYSTEM_PROMPT = (
    "You extract fields from insurance policy documents. Report each field exactly as the document states "
    "it, or null when the document does not state it; never guess. Dates as YYYY-MM-DD. premium and "
    "coverage_limit as plain numbers without currency or thousands separators. currency as an ISO 4217 "
    "code. insured_name is the policyholder (not an additional insured, not an address)."
)

_POLICY_NUMBER = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-/._]{2,63}")
_UNICODE_HYPHENS = str.maketrans({"\u2010": "-", "\u2011": "-", "\u2012": "-"})


@dataclass(frozen=True)
class _Labelled:
    target: str | None
    value: str
    separated: bool  # a colon, dash, tab or wide gap sat between label and value
    next_line: bool  # the value came from the line after the label


@dataclass(frozen=True)
class _Amount:
    value: float
    currency: str | None
    currency_confidence: float


def input_from_upload(*, filename: str, content: bytes) -> dict:
    """Turn an uploaded document into this agent's input: a PDF as `pdf_base64`, else UTF-8 `text`."""
    if content.startswith(b"%PDF"):
        return {"filename": filename, "pdf_base64": base64.b64encode(content).decode("ascii")}
    try:
        return {"filename": filename, "text": content.decode("utf-8")}
    except UnicodeDecodeError:
        raise ValueError("Not a PDF and not UTF-8 text.") from None


def extract_fields(text: str) -> tuple[dict, dict]:
    """Return (fields, confidence) for every name in FIELDS; a field not found is None with confidence 0."""
    text = unicodedata.normalize("NFKC", text).translate(_UNICODE_HYPHENS)
    date_order = _document_date_order(text)
    found: dict[str, tuple[object, float]] = {}
    amount_currencies: list[tuple[str, float]] = []
    for item in _labelled_values(text):
        base = CONFIDENCE_NEXT_LINE if item.next_line else CONFIDENCE_LABELLED
        for name, value, confidence in _parse_item(item, date_order):
            if name in found:
                continue
            if isinstance(value, _Amount):
                if value.currency:
                    amount_currencies.append((value.currency, value.currency_confidence))
                value = value.value
            found[name] = (value, min(base, confidence))
    if "currency" not in found and amount_currencies:
        # The most certain of the currencies written on the premium and limit lines, the first on a tie.
        found["currency"] = max(amount_currencies, key=lambda pair: pair[1])
    fields = {name: found[name][0] if name in found else None for name in FIELDS}
    confidence = {name: round(found[name][1], 2) if name in found else 0.0 for name in FIELDS}
    return fields, confidence


def _parse_item(item: _Labelled, date_order: str | None) -> list[tuple[str, object, float]]:
    """Parse one labelled value; return (field, value, confidence) triples, none if it does not parse."""
    target, value = item.target, item.value
    if target == "policy_number":
        number = _parse_policy_number(value)
        return [(target, number, 1.0)] if number else []
    if target == "insured_name":
        name = _parse_name(value) if item.separated else None
        return [(target, name, 1.0)] if name else []
    if target in ("effective_date", "expiry_date"):
        dates = find_dates(value, date_order)
        return [(target, *dates[0])] if dates else []
    if target == PERIOD:
        dates = find_dates(value, date_order)
        parsed = [("effective_date", *dates[0])] if dates else []
        if len(dates) > 1:
            parsed.append(("expiry_date", dates[1][0], min(dates[1][1], CONFIDENCE_RANGE_END)))
        return parsed
    if target in ("premium", "coverage_limit"):
        amount = parse_amount(value)
        return [(target, amount, 1.0)] if amount else []
    if target == "currency":
        currency = parse_currency(value)
        return [(target, currency, 1.0)] if currency else []
    return []


def _labelled_values(text: str) -> list[_Labelled]:
    """Find every label in the text, in document order, with the text that follows it."""
    lines = [_split_line(line) for line in text.splitlines() if line.strip()]
    labelled = []
    for index, (_, items) in enumerate(lines):
        for target, value, separated in items:
            next_line = False
            if not value and index + 1 < len(lines):
                value = lines[index + 1][0]
                next_line = bool(value)
            labelled.append(_Labelled(target, value, separated or next_line, next_line))
    return labelled


def _split_line(line: str) -> tuple[str, list[tuple[str | None, str, bool]]]:
    """Split a line into its text before the first label and (target, value, separated) per label."""
    hits = _label_hits(line)
    items = []
    for position, (_, end, target) in enumerate(hits):
        stop = hits[position + 1][0] if position + 1 < len(hits) else len(line)
        separator = _SEPARATOR.match(line, end, stop)
        value = line[separator.end() : stop].strip().rstrip(",;|").strip()
        items.append((target, value, separator.group("sep") is not None))
    lead = line[: hits[0][0]] if hits else line
    return lead.strip(), items


def _label_hits(line: str) -> list[tuple[int, int, str | None]]:
    """Return the line's labels as (start, end, target): the longest wins where two overlap."""
    hits = [(m.start(), m.end(), target) for pattern, target in _LABELS for m in pattern.finditer(line)]
    hits.sort(key=lambda hit: (hit[0], hit[0] - hit[1]))
    chosen: list[tuple[int, int, str | None]] = []
    for hit in hits:
        if chosen and hit[0] < chosen[-1][1]:
            continue
        chosen.append(hit)
    return [hit for hit in chosen if _is_label_position(line, hit[0], hit[1])]


def _is_label_position(line: str, start: int, end: int) -> bool:
    # "The Insured shall notify ..." is prose; "Insured: ..." and a line starting "Insured" are labels.
    return _LINE_START.fullmatch(line, 0, start) is not None or _COLON_NEXT.match(line, end) is not None


def _document_date_order(text: str) -> str | None:
    """Return "dmy" or "mdy" if the document's unambiguous numeric dates agree on an order, else None."""
    orders = set()
    for match in _NUMERIC_DATE.finditer(text):
        first, second = int(match.group(1)), int(match.group(3))
        if first > 12 >= second:
            orders.add("dmy")
        elif second > 12 >= first:
            orders.add("mdy")
    return orders.pop() if len(orders) == 1 else None


def find_dates(value: str, date_order: str | None = None) -> list[tuple[str, float]]:
    """Return the valid dates in `value` as (ISO date, confidence), in order."""
    dates = []
    for match in _DATE.finditer(value):
        parsed = _match_to_date(match, date_order)
        if parsed is not None:
            dates.append(parsed)
    return dates


def _match_to_date(match: re.Match, date_order: str | None) -> tuple[str, float] | None:
    groups = match.groupdict()
    confidence = 1.0
    if groups["iy"]:
        year, month, day = int(groups["iy"]), int(groups["im"]), int(groups["id"])
    elif groups["ny"]:
        first, second, year = int(groups["na"]), int(groups["nb"]), int(groups["ny"])
        day, month, confidence = _day_and_month(first, second, groups["nsep"], date_order)
    elif groups["dy"]:
        year, month, day = int(groups["dy"]), _MONTHS[groups["dmon"][:3].lower()], int(groups["dd"])
    else:
        year, month, day = int(groups["my"]), _MONTHS[groups["mmon"][:3].lower()], int(groups["md"])
    try:
        return date(year, month, day).isoformat(), confidence
    except ValueError:
        return None


def _day_and_month(first: int, second: int, separator: str, date_order: str | None) -> tuple[int, int, float]:
    """Order a numeric date's first two numbers as (day, month, confidence)."""
    if first > 12 or first == second:
        return first, second, 1.0
    if second > 12:
        return second, first, 1.0
    if separator == ".":  # 01.02.2025 is day first wherever dots are used
        return first, second, 1.0
    if date_order == "mdy":
        return second, first, CONFIDENCE_DOCUMENT_DATE_ORDER
    if date_order == "dmy":
        return first, second, CONFIDENCE_DOCUMENT_DATE_ORDER
    return first, second, CONFIDENCE_AMBIGUOUS_DATE


def parse_amount(value: str) -> _Amount | None:
    """Return the first amount in `value` with the currency written next to it, if any."""
    match = _NUMBER.search(value)
    if match is None:
        return None
    number = float(match.group().replace(",", ""))
    currency, confidence = _currency_beside(value[: match.start()], value[match.end() :])
    return _Amount(number, currency, confidence)


def _currency_beside(before: str, after: str) -> tuple[str | None, float]:
    """Return the currency written just before or after an amount, with its confidence."""
    for found in (_CURRENCY_BEFORE.search(before), _CURRENCY_AFTER.match(after)):
        if found is None:
            continue
        code, symbol = found.group("code"), found.group("symbol")
        if code in ISO_4217:
            return code, CONFIDENCE_CODE_ON_AMOUNT
        if symbol == "US$":
            return "USD", CONFIDENCE_CODE_ON_AMOUNT
        if symbol:
            return _SYMBOLS[symbol], CONFIDENCE_SYMBOL
    return None, 0.0


def parse_currency(value: str) -> str | None:
    """Return the ISO 4217 code a "Currency:" value names: a code, a currency's name or a symbol."""
    for code in re.findall(r"(?<![A-Za-z])[A-Z]{3}(?![A-Za-z])", value):
        if code in ISO_4217:
            return code
    if value.strip().upper() in ISO_4217:
        return value.strip().upper()
    for pattern, code in _CURRENCY_NAMES:
        if pattern.search(value):
            return code
    for symbol, code in _SYMBOLS.items():
        if symbol in value:
            return code
    return None


def _parse_policy_number(value: str) -> str | None:
    token = value.split()[0].strip(".,;:()") if value.split() else ""
    if _POLICY_NUMBER.fullmatch(token) and any(char.isdigit() for char in token):
        return token
    return None


def _parse_name(value: str) -> str | None:
    name = " ".join(value.split()).strip(" ,;:\"'")
    if not name or len(name) > 200 or not any(char.isalpha() for char in name):
        return None
    if _LOOKS_LIKE_LABEL.match(name):  # "Insured Address: ..." slipped through as "Address: ..."
        return None
    return name


def decode_pdf_base64(data: str) -> bytes:
    """Decode base64 strictly (whitespace such as line wrapping aside) and check it is a PDF."""
    try:
        pdf = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NonRetryableAgentError(f"pdf_base64 is not valid base64 ({exc}).") from exc
    if len(pdf) > MAX_PDF_BYTES:
        raise NonRetryableAgentError(f"The PDF is larger than {MAX_PDF_BYTES // (1024 * 1024)} MiB.")
    # The PDF specification lets the header start anywhere in the first 1024 bytes.
    if b"%PDF-" not in pdf[:1024]:
        raise NonRetryableAgentError("pdf_base64 does not hold a PDF (no %PDF- header).")
    return pdf


def pdf_text(pdf: bytes) -> tuple[str, int]:
    """Return the PDF's text, pages joined by newlines, and its page count."""
    try:
        reader = PdfReader(io.BytesIO(pdf))
        # Encrypted PDFs that open without a password ("secured" against editing only) are read.
        locked = reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED
        pages = [] if locked else [page.extract_text() or "" for page in reader.pages]
    except Exception as exc:
        # pypdf raises anything from PdfReadError to KeyError on damaged files; each means "unreadable".
        raise NonRetryableAgentError(f"The PDF could not be read ({type(exc).__name__}: {exc}).") from exc
    if locked:
        raise NonRetryableAgentError("The PDF is encrypted (password protected); send it unencrypted.")
    text = "\n".join(pages)
    if not text.strip():
        raise NonRetryableAgentError("The PDF has no extractable text (a scanned image? OCR is not offered).")
    return text, len(pages)


@register
class DocumentExtractorAgent(Agent):
    name = "document-extractor"
    description = (
        "Reads the fields of an insurance policy (policy number, insured, start and end dates, premium, "
        'coverage limit, currency) from a document: its text in "text" or a PDF in "pdf_base64", one of the '
        'two. Every field comes back with how sure the reading is. "mode" chooses how it reads: "rules" '
        '(the default: labelled lines), "llm" (a language model, falling back to the rules when none answers) '
        'or "auto" (a language model when one is set up).'
    )
    input_schema = {
        "type": "object",
        "properties": {
            "text": {"type": "string", "maxLength": MAX_TEXT_CHARS},
            "pdf_base64": {"type": "string", "minLength": 1, "maxLength": MAX_PDF_BASE64_CHARS},
            "filename": {"type": "string", "maxLength": 255},
            "mode": {
                "enum": [MODE_RULES, MODE_LLM, MODE_AUTO],
                "default": MODE_RULES,
                "description": 'How to read the fields: "rules" (labelled lines), "llm" (a language model, '
                'falling back to the rules if none answers), "auto" (llm when a provider is configured).',
            },
        },
        "additionalProperties": False,
        # Exactly one of text / pdf_base64, written so that errors never quote the (large) document.
        "allOf": [
            {"if": {"not": {"required": ["pdf_base64"]}}, "then": {"required": ["text"]}},
            {"if": {"required": ["text"]}, "then": {"propertyNames": {"enum": ["text", "filename", "mode"]}}},
        ],
    }
    concurrency = ConcurrencyPolicy(limit=1, on_busy=OnBusy.REJECT)

    async def run(self, context: AsyncAgentContext) -> dict:
        data = context.input
        text, pages = await asyncio.to_thread(document_text, data)
        source = "text" if pages is None else "pdf"
        mode = data.get("mode", MODE_RULES)
        if mode == MODE_AUTO:
            mode = MODE_LLM if any_provider_configured() else MODE_RULES
        extra = {}
        if mode == MODE_LLM:
            fields, confidence, extra = await extract_fields_llm(text, context)
        else:
            fields, confidence = await asyncio.to_thread(extract_fields, text)
        missing = [name for name in FIELDS if fields[name] is None]
        output = {"fields": fields, "confidence": confidence, "missing": missing, "source": source}
        if pages is not None:
            output["pages"] = pages
        output["characters"] = len(text)
        if data.get("mode", MODE_RULES) != MODE_RULES:  # the rules-only output stays as it always was
            output.update(extra or {"method": MODE_RULES})
        context.log.info(
            "document_extracted",
            source=source,
            filename=data.get("filename"),
            pages=pages,
            missing=missing,
            method=output.get("method", MODE_RULES),
        )
        return output


def document_text(data: dict) -> tuple[str, int | None]:
    """Return the input's text and, for a PDF, its page count (None for `text`). CPU-bound: run it in a thread."""
    if "text" in data:
        return data["text"], None
    return pdf_text(decode_pdf_base64(data["pdf_base64"]))


async def extract_fields_llm(text: str, context: AsyncAgentContext) -> tuple[dict, dict, dict]:
    """Ask the LLM gateway for the fields; fall back to `extract_fields` if no model gives a usable answer.

    Return (fields, confidence, extra): extra holds `method` ("llm" or "rules"), and `fallback_reason`
    when the rules were used. A refused budget is not a reason to fall back: BudgetExceededError
    propagates and ends the run.
    """
    rules_fields, rules_confidence = await asyncio.to_thread(extract_fields, text)
    document = text[:LLM_MAX_DOCUMENT_CHARS]
    prompt = "Extract the fields from this insurance document.\n\n<document>\n" + document + "\n</document>"
    try:
        completion = await acomplete(
            messages=[{"role": "user", "content": prompt}],
            system=LLM_SYSTEM_PROMPT,
            max_tokens=LLM_MAX_TOKENS,
            temperature=0.0,
            json_schema=LLM_FIELDS_SCHEMA,
            context=context,
        )
    except LLMGatewayError as exc:
        context.log.warning("document_llm_fallback", error=str(exc)[:500])
        return rules_fields, rules_confidence, {"method": MODE_RULES, "fallback_reason": str(exc)[:1000]}
    fields = {name: _llm_value(name, completion.parsed_json.get(name)) for name in FIELDS}
    confidence = {}
    for name in FIELDS:
        if fields[name] is None:
            confidence[name] = 0.0
        elif fields[name] == rules_fields[name]:
            confidence[name] = max(rules_confidence[name], CONFIDENCE_LLM_ONLY)
        else:
            confidence[name] = CONFIDENCE_LLM_ONLY
    extra = {
        "method": MODE_LLM,
        "llm": {
            "provider": completion.provider,
            "model": completion.model,
            "usage": completion.usage(),
            "cost_usd": completion.cost_usd_text,
            "characters_sent": len(document),
        },
    }
    return fields, confidence, extra


def _llm_value(name: str, value):
    """Normalise one value from the model like the rules' values: trimmed text, floats, ISO dates."""
    if value is None:
        return None
    if name in ("premium", "coverage_limit"):
        return float(value)
    text = " ".join(str(value).split())
    if not text:
        return None
    if name in ("effective_date", "expiry_date"):
        try:
            return date.fromisoformat(text).isoformat()
        except ValueError:  # "2025-02-30" passes the schema's pattern
            return None
    return text
