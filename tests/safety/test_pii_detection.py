"""PII detectors: every kind found when valid, ignored when its checksum or format fails."""

from __future__ import annotations

import pytest

from alize.safety import checksums
from alize.safety.pii import detect, pii_score, redact


def kinds(text: str) -> list[tuple[str, str]]:
    return [(s.kind, s.text) for s in detect(text)]


@pytest.mark.parametrize(
    "value",
    ["jean.dupont@example.fr", "a.b-c+tag@mail.sub.example.co.uk", "x_y@example.museum"],
)
def test_email_found(value: str) -> None:
    assert kinds(f"Write to {value}, thanks.") == [("EMAIL", value)]


@pytest.mark.parametrize("value", ["user@localhost", "@example.com", "name@example."])
def test_email_rejected(value: str) -> None:
    assert [k for k, _ in kinds(f"contact {value} now")] == []


@pytest.mark.parametrize(
    "value",
    [
        "+33 6 12 34 56 78",  # FR international
        "06 12 34 56 78",  # FR national
        "+49 30 12345678",  # DE
        "030 1234 5678",  # DE national
        "+44 20 7946 0958",  # UK
        "0034 612 345 678",  # ES with 00 prefix
        "612 345 678",  # ES mobile
        "+39 06 1234 5678",  # IT
        "(415) 555-2671",  # US
    ],
)
def test_phone_found(value: str) -> None:
    assert kinds(f"Call me at {value} tomorrow.") == [("PHONE", value)]


@pytest.mark.parametrize("value", ["12 34", "+33 6", "1234567", "2024-01-15", "10:30"])
def test_phone_rejected(value: str) -> None:
    assert kinds(f"Reference {value} only.") == []


@pytest.mark.parametrize(
    "value",
    ["DE89 3704 0044 0532 0130 00", "FR14 2004 1010 0505 0001 3M02 606", "GB82WEST12345698765432"],
)
def test_iban_found(value: str) -> None:
    assert kinds(f"Pay to {value} please.") == [("IBAN", value)]


@pytest.mark.parametrize(
    "value",
    [
        "DE89 3704 0044 0532 0130 01",  # bad mod-97
        "FR15 2004 1010 0505 0001 3M02 606",  # bad check digits
        "DE89 3704 0044 0532 0130",  # wrong length for DE
    ],
)
def test_iban_bad_checksum_rejected(value: str) -> None:
    assert [k for k, _ in kinds(f"Pay to {value} please.")] == []


@pytest.mark.parametrize(
    "value", ["4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005", "6011 0009 9013 9424"]
)
def test_card_found(value: str) -> None:
    assert kinds(f"My card is {value}.") == [("CARD", value)]


@pytest.mark.parametrize("value", ["4111 1111 1111 1112", "5500-0000-0000-0005", "378282246310006"])
def test_card_bad_luhn_rejected(value: str) -> None:
    assert kinds(f"My card is {value}.") == []


@pytest.mark.parametrize(
    "value", ["192.168.1.20", "8.8.8.8", "2001:db8::8a2e:370:7334", "fe80::1", "::ffff:10.0.0.1"]
)
def test_ip_found(value: str) -> None:
    assert kinds(f"Server at {value} is down.") == [("IP", value)]


@pytest.mark.parametrize("value", ["256.1.1.1", "192.168.1", "2001:db8:::1", "1:2:3:4:5:6:7:8:9"])
def test_ip_invalid_rejected(value: str) -> None:
    assert [k for k, _ in kinds(f"Server at {value} is down.")] == []


@pytest.mark.parametrize(
    ("value", "subtype"),
    [
        ("2 55 08 14 168 025 38", "FR_NIR"),
        ("169052A12345641", "FR_NIR"),  # Corsica (2A) computed with 19
        ("12345678Z", "ES_DNI"),
        ("X1234567L", "ES_DNI"),  # NIE
        ("RSSMRA85T10A562S", "IT_CODICE_FISCALE"),
        ("86095742719", "DE_STEUER_ID"),
        ("123-45-6789", "US_SSN"),
    ],
)
def test_national_id_found(value: str, subtype: str) -> None:
    spans = detect(f"My id is {value} ok")
    assert [(s.kind, s.text, s.subtype) for s in spans] == [("NATIONAL_ID", value, subtype)]


@pytest.mark.parametrize(
    "value",
    [
        "2 55 08 14 168 025 39",  # NIR key off by one
        "12345678A",  # DNI wrong letter
        "X1234567A",  # NIE wrong letter
        "RSSMRA85T10A562T",  # codice fiscale wrong check char
        "86095742718",  # Steuer-ID wrong check digit
        "666-45-6789",  # SSN area 666 never issued
        "123-00-6789",  # SSN group 00
    ],
)
def test_national_id_bad_checksum_rejected(value: str) -> None:
    assert [s for s in detect(f"My id is {value} ok") if s.kind == "NATIONAL_ID"] == []


def test_corsica_nir_key_is_computed_with_19() -> None:
    body = "255082A168025"
    key = 97 - int(body.replace("2A", "19")) % 97
    assert checksums.fr_nir_ok(f"{body}{key:02d}")
    assert not checksums.fr_nir_ok(f"{body}{(key % 97) + 1:02d}")


def test_redaction_replaces_every_kind_with_placeholders() -> None:
    text = (
        "Mail jean.dupont@example.fr, call +33 6 12 34 56 78, IBAN DE89 3704 0044 0532 0130 00, "
        "card 4111 1111 1111 1111, host 10.0.0.7, DNI 12345678Z."
    )
    assert redact(text) == (
        "Mail [EMAIL], call [PHONE], IBAN [IBAN], card [CARD], host [IP], DNI [NATIONAL_ID]."
    )


def test_redaction_keeps_text_without_pii_and_bad_numbers() -> None:
    text = "Order 4111 1111 1111 1112 shipped on 2024-01-15 at 10:30."
    assert redact(text) == text
    assert pii_score(detect(text)) == 0.0


def test_spans_are_sorted_and_index_the_text() -> None:
    text = "a@b.example and 8.8.4.4"
    spans = detect(text)
    assert [text[s.start : s.end] for s in spans] == [s.text for s in spans]
    assert [s.start for s in spans] == sorted(s.start for s in spans)
    assert pii_score(spans) == 1.0


def test_kinds_filter_limits_detectors() -> None:
    text = "a@b.example and 8.8.4.4"
    assert [s.kind for s in detect(text, frozenset({"IP"}))] == ["IP"]
