"""Check-digit algorithms for the identifiers the PII detectors report.

Kept apart from the regular expressions in :mod:`alize.safety.pii` because these are the part
that decides whether a number is real: a candidate whose checksum fails is not PII, which is
what keeps order numbers, timestamps and random digit runs from being redacted.

Every function takes the identifier with separators already removed and returns a bool.
"""

from __future__ import annotations

import ipaddress
from collections import Counter

#: IBAN length per country for the SEPA area and a few frequent others (ISO 13616 registry).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22, "DK": 18,
    "EE": 20, "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GI": 23, "GR": 27, "HR": 21, "HU": 28,
    "IE": 22, "IS": 26, "IT": 27, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MT": 31,
    "NL": 18, "NO": 15, "PL": 28, "PT": 25, "RO": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27,
    "VA": 22, "AL": 28, "BA": 20, "ME": 22, "MK": 19, "RS": 22, "TR": 26, "UA": 29, "SA": 24,
    "AE": 23, "IL": 23, "BR": 29, "MU": 30, "TN": 24,
}  # fmt: skip


def iban_ok(iban: str) -> bool:
    """ISO 13616: known country length (15-34 otherwise) and mod-97 of the rearranged number is 1."""
    iban = iban.upper()
    if not (15 <= len(iban) <= 34 and iban[:2].isalpha() and iban[2:4].isdigit() and iban.isalnum()):
        return False
    expected = IBAN_LENGTHS.get(iban[:2])
    if expected is not None and len(iban) != expected:
        return False
    digits = "".join(str(int(ch, 36)) for ch in iban[4:] + iban[:4])
    return int(digits) % 97 == 1


def luhn_ok(number: str) -> bool:
    """Luhn (mod 10) check used by payment cards."""
    if not number.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_issuer_ok(number: str) -> bool:
    """The number's issuer prefix (IIN) exists and allows its length (Visa 13/16/19, Mastercard 16,
    Amex 15, Discover / JCB / UnionPay / Maestro / Diners their ranges).

    With Luhn alone one random digit run in ten would pass; tying prefix to length removes most.
    """
    n = len(number)
    if number[0] == "4":
        return n in (13, 16, 19)
    two, four = int(number[:2]), int(number[:4])
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return n == 16
    if two in (34, 37):
        return n == 15
    if two == 36 or 300 <= int(number[:3]) <= 305 or two in (38, 39):
        return 14 <= n <= 19
    if 3528 <= four <= 3589 or two in (62, 65) or four == 6011 or 644 <= int(number[:3]) <= 649:
        return 16 <= n <= 19
    if two == 50 or 56 <= two <= 69:
        return 13 <= n <= 19
    return False


def ip_ok(candidate: str) -> bool:
    """A syntactically valid IPv4 or IPv6 address (by the standard library's parser)."""
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


def fr_nir_ok(nir: str) -> bool:
    """French social security number (NIR): 13 characters + key = 97 - (number mod 97).

    Corsican departments 2A / 2B are replaced by 19 / 18 for the computation.
    """
    nir = nir.upper()
    if len(nir) != 15 or nir[0] not in "12" or not nir[13:].isdigit():
        return False
    body = nir[:13]
    if body[5:7] == "2A":
        number = int(body[:5] + "19" + body[7:])
    elif body[5:7] == "2B":
        number = int(body[:5] + "18" + body[7:])
    elif body.isdigit():
        number = int(body)
    else:
        return False
    month = int(body[3:5])
    if not (1 <= month <= 12 or 20 <= month <= 42 or 50 <= month <= 99):
        return False
    return 97 - number % 97 == int(nir[13:])


_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def es_dni_ok(dni: str) -> bool:
    """Spanish DNI (8 digits + letter) or NIE (X/Y/Z + 7 digits + letter): letter = n mod 23."""
    dni = dni.upper()
    if len(dni) != 9:
        return False
    head = dni[:8]
    if head[0] in "XYZ":
        head = str("XYZ".index(head[0])) + head[1:]
    if not head.isdigit():
        return False
    return _DNI_LETTERS[int(head) % 23] == dni[8]


_CF_ODD = {
    **dict(zip("0123456789", (1, 0, 5, 7, 9, 13, 15, 17, 19, 21), strict=True)),
    **dict(
        zip(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
            (1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23),
            strict=True,
        )
    ),
}


def it_codice_fiscale_ok(code: str) -> bool:
    """Italian codice fiscale: 16 characters, the last a check letter over odd/even position tables."""
    code = code.upper()
    if len(code) != 16 or not code.isalnum():
        return False
    total = 0
    for i, ch in enumerate(code[:15]):
        if i % 2 == 0:  # 1st, 3rd, ... (odd positions counting from 1)
            total += _CF_ODD[ch]
        else:
            total += int(ch) if ch.isdigit() else ord(ch) - ord("A")
    return chr(ord("A") + total % 26) == code[15]


def de_steuer_id_ok(tax_id: str) -> bool:
    """German Steuer-ID: 11 digits, no leading 0, one digit repeated 2-3 times, ISO 7064 MOD 11,10 check."""
    if len(tax_id) != 11 or not tax_id.isdigit() or tax_id[0] == "0":
        return False
    counts = Counter(tax_id[:10])
    repeated = [c for c in counts.values() if c > 1]
    if len(repeated) != 1 or repeated[0] not in (2, 3):
        return False
    product = 10
    for ch in tax_id[:10]:
        total = (int(ch) + product) % 10 or 10
        product = (total * 2) % 11
    check = 11 - product
    return (0 if check == 10 else check) == int(tax_id[10])


def us_ssn_ok(ssn: str) -> bool:
    """US SSN (no checksum exists): area not 000, 666 or 9xx; group not 00; serial not 0000."""
    if len(ssn) != 9 or not ssn.isdigit():
        return False
    area, group, serial = ssn[:3], ssn[3:5], ssn[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"
