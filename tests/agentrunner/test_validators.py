"""Shared validators: JSON the database can store, text that can go into an email header."""

import pytest
from django.core.exceptions import ValidationError

from agentrunner.validators import validate_header_text, validate_storable_json


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("a\x00b", "a NUL character (\\u0000) in the value:"),
        ({"a": {"b": [1, "x\x00"]}}, "a NUL character (\\u0000) in the value at a.b[1]"),
        ({"a": [{"k\x00": 1}]}, "a NUL character (\\u0000) in the key 'k\\u0000' at a[0]"),
        ({"\ud800": 1}, "a lone surrogate (\\ud800) in the key '\\ud800':"),
        ({"notes": ["ok", "\udfff tail"]}, "a lone surrogate (\\udfff) in the value at notes[1]"),
        ([{"a": "\ud83d"}], "a lone surrogate (\\ud83d) in the value at [0].a"),
    ],
)
def test_validate_storable_json__nul_or_lone_surrogate_anywhere_is_refused_naming_where(value, fragment):
    with pytest.raises(ValidationError) as refused:
        validate_storable_json(value)
    assert fragment in refused.value.messages[0], refused.value.messages
    assert refused.value.code == "unstorable_text"


def test_validate_storable_json__ordinary_text_numbers_and_paired_surrogates_pass():
    validate_storable_json({"größe": "😀 \t\n\x01", "list": [1, 2.5, None, True, {"": ""}]})


def test_validate_storable_json__nesting_as_deep_as_the_parser_allows_is_walked_without_recursion():
    nested: object = "\x00"
    for _ in range(100_000):
        nested = {"a": [nested]}
    with pytest.raises(ValidationError):
        validate_storable_json(nested)


@pytest.mark.parametrize(
    "text", ["Top\r\nBcc: x@example.com", "Top\nclaims", "Top\rclaims", "a\tb", "a\x00", "\x7f", "a\x85b", "a\u2028b"]
)
def test_validate_header_text__control_characters_are_refused(text):
    with pytest.raises(ValidationError) as refused:
        validate_header_text(text)
    assert "control characters" in refused.value.messages[0]


def test_validate_header_text__ordinary_text_passes():
    validate_header_text("Claim intake — top claims (Zürich, 😀)")
