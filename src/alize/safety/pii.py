"""PII detection and redaction: e-mail, phone, IBAN, payment card, IP, national identifiers.

Each detector is a regular expression that proposes candidates and, where one exists, a
checksum (:mod:`alize.safety.checksums`) that disposes: a number whose check digits fail is
not reported. Candidates from different detectors may overlap (an IBAN contains digit runs that
look like a phone number); overlaps are resolved by a fixed priority, most specific first:
e-mail, IBAN, national id, card, IP, phone (a national id's mod-97 or check letter is a stronger
proof than Luhn, which one random digit run in ten passes).

Redaction replaces each span with a readable placeholder (``[EMAIL]``, ``[PHONE]``, ``[IBAN]``,
``[CARD]``, ``[IP]``, ``[NATIONAL_ID]``) so a redacted prompt still reads naturally to a model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

from alize.safety.checksums import (
    card_issuer_ok,
    de_steuer_id_ok,
    es_dni_ok,
    fr_nir_ok,
    iban_ok,
    ip_ok,
    it_codice_fiscale_ok,
    luhn_ok,
    us_ssn_ok,
)

KINDS: Final[tuple[str, ...]] = ("EMAIL", "IBAN", "NATIONAL_ID", "CARD", "IP", "PHONE")


@dataclass(frozen=True, slots=True)
class PiiSpan:
    """One detected item: ``text[start:end]`` of ``kind``; ``subtype`` names the national id."""

    start: int
    end: int
    kind: str
    text: str
    subtype: str | None = None

    @property
    def placeholder(self) -> str:
        return f"[{self.kind}]"


def _compact(text: str) -> str:
    return re.sub(r"[\s.\-/]", "", text)


# A candidate must not be glued to letters/digits, nor be a piece of a longer run of digit groups
# ("... 3704 0044 0532 ..." holds phone-shaped pieces that are not phone numbers).
_L = r"(?<![\w@.+\-])(?<!\d[ .\-/])"
_R = r"(?![\w@]|[.\-]\w|[ /]\d)"

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
_EMAIL = re.compile(
    r"(?<![\w.+\-])[A-Za-z0-9][A-Za-z0-9._%+\-]*@"
    + _LABEL
    + r"(?:\."
    + _LABEL
    + r")*\.[A-Za-z]{2,24}(?![\w\-])"
)
_IBAN = re.compile(_L + r"[A-Za-z]{2}\d{2}(?:[ \-]?[A-Za-z0-9]{1,4}){3,8}" + r"(?![\w])")
_CARD = re.compile(_L + r"\d(?:[ \-]?\d){12,18}" + _R)
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
_IPV6 = re.compile(
    r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{0,4})(?![\w:]|\.\d)"
)
_FR_NIR = re.compile(
    _L + r"[12][ .]?\d{2}[ .]?\d{2}[ .]?(?:\d{2}|2[ABab])[ .]?\d{3}[ .]?\d{3}[ .]?\d{2}" + _R
)
_ES_DNI = re.compile(_L + r"(?:\d{8}|[XYZxyz][ \-]?\d{7})[ \-]?[A-Za-z]" + r"(?![\w])")
_IT_CF = re.compile(r"(?<![\w])[A-Za-z]{6}[0-9LMNPQRSTUVlmnpqrstuv]{2}[A-Za-z][0-9LMNPQRSTUVlmnpqrstuv]{2}"
                    r"[A-Za-z][0-9LMNPQRSTUVlmnpqrstuv]{3}[A-Za-z](?![\w])")  # fmt: skip
_DE_STID = re.compile(_L + r"[1-9]\d(?:[ ]?\d){9}" + _R)
_US_SSN = re.compile(_L + r"\d{3}[ \-]\d{2}[ \-]\d{4}" + _R)
# Phones: international (+CC or 00CC) or national trunk-prefixed (0...) with separators.
_PHONE_INTL = re.compile(_L + r"(?:\+|00)[1-9]\d{0,2}(?:[ .\-]?\(?\d{1,4}\)?){2,6}" + _R)
_PHONE_NATIONAL = re.compile(_L + r"\(?0\d{1,4}\)?(?:[ .\-/]?\d{2,4}){2,5}" + _R)
_PHONE_NANP = re.compile(_L + r"\(?[2-9]\d{2}\)?[ .\-][2-9]\d{2}[ .\-]\d{4}" + _R)
_PHONE_MOBILE = re.compile(_L + r"[367]\d{2}[ .]\d{3}[ .]\d{3,4}" + _R)  # IT 3xx, ES 6xx/7xx


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def _emails(text: str) -> Iterator[PiiSpan]:
    for m in _EMAIL.finditer(text):
        yield PiiSpan(m.start(), m.end(), "EMAIL", m.group())


def _ibans(text: str) -> Iterator[PiiSpan]:
    for m in _IBAN.finditer(text):
        # the greedy group may swallow a following word; retry shorter prefixes on failure
        value = m.group()
        for end in range(len(value), 14, -1):
            candidate = value[:end].rstrip(" -")
            if len(candidate) == end and iban_ok(_compact(candidate)):
                yield PiiSpan(m.start(), m.start() + end, "IBAN", candidate)
                break


def _cards(text: str) -> Iterator[PiiSpan]:
    for m in _CARD.finditer(text):
        number = _digits(m.group())
        if 13 <= len(number) <= 19 and card_issuer_ok(number) and luhn_ok(number):
            yield PiiSpan(m.start(), m.end(), "CARD", m.group())


def _ips(text: str) -> Iterator[PiiSpan]:
    for pattern in (_IPV4, _IPV6):
        for m in pattern.finditer(text):
            value = m.group()
            if (":" not in value or sum(c.isalnum() for c in value) >= 2) and ip_ok(value):
                yield PiiSpan(m.start(), m.end(), "IP", value)


_NATIONAL: Final[tuple[tuple[str, re.Pattern[str], Callable[[str], bool]], ...]] = (
    ("FR_NIR", _FR_NIR, fr_nir_ok),
    ("ES_DNI", _ES_DNI, es_dni_ok),
    ("IT_CODICE_FISCALE", _IT_CF, it_codice_fiscale_ok),
    ("DE_STEUER_ID", _DE_STID, de_steuer_id_ok),
    ("US_SSN", _US_SSN, us_ssn_ok),
)


def _national_ids(text: str) -> Iterator[PiiSpan]:
    for subtype, pattern, check in _NATIONAL:
        for m in pattern.finditer(text):
            compact = re.sub(r"[\s.\-]", "", m.group())
            if check(compact):
                yield PiiSpan(m.start(), m.end(), "NATIONAL_ID", m.group(), subtype)


def _phones(text: str) -> Iterator[PiiSpan]:
    for pattern, low, high in (
        (_PHONE_INTL, 8, 15),
        (_PHONE_NATIONAL, 9, 12),
        (_PHONE_NANP, 10, 10),
        (_PHONE_MOBILE, 9, 10),
    ):
        for m in pattern.finditer(text):
            value = m.group()
            if value.count("(") != value.count(")"):
                value = value.lstrip("(")
            if low <= len(_digits(value)) <= high:
                start = m.end() - len(value)
                yield PiiSpan(start, m.end(), "PHONE", value)


#: Detectors in priority order: when spans overlap, the earlier detector wins.
DETECTORS: Final[tuple[tuple[str, Callable[[str], Iterator[PiiSpan]]], ...]] = (
    ("EMAIL", _emails),
    ("IBAN", _ibans),
    ("NATIONAL_ID", _national_ids),
    ("CARD", _cards),
    ("IP", _ips),
    ("PHONE", _phones),
)


def detect(text: str, kinds: frozenset[str] | None = None) -> list[PiiSpan]:
    """Non-overlapping PII spans in ``text``, sorted by position; ``kinds`` limits the detectors."""
    accepted: list[PiiSpan] = []
    for kind, detector in DETECTORS:
        if kinds is not None and kind not in kinds:
            continue
        for span in sorted(detector(text), key=lambda s: (s.start, -(s.end - s.start))):
            if all(span.end <= other.start or span.start >= other.end for other in accepted):
                accepted.append(span)
    return sorted(accepted, key=lambda s: s.start)


def redact(text: str, spans: list[PiiSpan] | None = None) -> str:
    """``text`` with every span replaced by its placeholder (detecting first if not given)."""
    if spans is None:
        spans = detect(text)
    out: list[str] = []
    cursor = 0
    for span in sorted(spans, key=lambda s: s.start):
        out.append(text[cursor : span.start])
        out.append(span.placeholder)
        cursor = span.end
    out.append(text[cursor:])
    return "".join(out)


def pii_score(spans: list[PiiSpan]) -> float:
    """The ``pii`` category score: 1.0 when a verified identifier is present, else 0.0."""
    return 1.0 if spans else 0.0
