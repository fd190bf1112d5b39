"""Fax numbers: parsing (contract section 3) and the ``[numbers]`` policy. Pure; no I/O.

Decisions:

- Only digits, one leading ``+`` and the separators ``-`` ``.`` ``(`` ``)`` and space are accepted.
  Letters (``1-800-FLOWERS``), extensions (``x12``) and anything else are unreadable, even where
  ``phonenumbers`` would guess: a mail local part that is not plainly a number is not dialled.
- Readable means ``phonenumbers`` parses it and finds it *possible* for its country: the full
  length, not merely "possible locally" (a US number without its area code is unreadable).
  ``strict`` also needs ``is_valid_number`` (an assigned range, so no fictional 555 numbers).
- The country is the region ``phonenumbers`` names, else the main region of the calling code
  (US for +1 555...). Non-geographic numbers (+800...) keep phonenumbers' region "001".
- Policy order: allowed countries, then ``blocked_prefixes``, then costly ranges.
- Costly ranges are refused whatever the number's length (a premium number one digit too long is
  still routed to the premium service by many carriers), so they are found two ways:
  by ``phonenumbers``' type where the number is valid (``PREMIUM_RATE``; ``SHARED_COST`` unless
  ``numbers.allow_shared_cost``), and by the prefix tables below, which look at the leading digits
  of the national number only, for numbers that are merely possible or not even that (a number
  in such a range that has the wrong length is refused by policy, 550 5.7.1, not as unreadable).
  Non-geographic calling codes (region "001") are refused except +800 (international freephone):
  +808 is shared cost, +979 premium rate, and +870, +881, +882, +883 (satellite and international
  networks), +878, +888 and +991 cost what the network asks. ``allowed_countries = ["*"]`` does
  not lift this.
- ``blocked_prefixes`` are matched against the E.164 digits without the ``+``. For NANP (``1...``)
  numbers a prefix reads as ``1NPA`` (an area code: ``1900``), ``1NPANXX`` (one exchange of one
  area code: ``1416976``) and so on, with one addition: when the three digits after the ``1`` are
  no area code at all (``phonenumbers`` places no number there, e.g. 976 or 555), the prefix names
  an *exchange in every area code*: ``1976`` blocks ``+1 416 976 ...`` and ``+1 212 976 ...``
  alike (the 976 exchanges are local premium lines), and ``19761`` blocks the 976 lines starting 1.
  ``1900`` stays the 900 area code only (900 is one), so the 900 exchanges of ordinary area codes
  are not blocked by it. The built-in tables refuse NPA 900 and NXX 976 in any case.
- Reasons are sentences for the sender (they end up in SMTP 550 replies), name the setting that
  would change the answer where one exists, and never repeat the full number, so they may be
  logged as they are.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat, PhoneNumberType, ValidationResult

from faxbridge.config import NumbersConfig
from faxbridge.errors import NumberError

__all__ = ["ParsedNumber", "check_policy", "costly_range", "mask", "parse"]

PREMIUM = "premium-rate numbers are not allowed"
SHARED = "shared-cost numbers are not allowed (numbers.allow_shared_cost)"
NETWORK = "satellite and international-network numbers (+{code}) are not allowed"

# Leading digits of the national significant number, per calling code: (prefix, reason).
RANGES: dict[int, tuple[tuple[str, str], ...]] = {
    1: (("900", PREMIUM),),                                            # NANP; NXX 976: see _nanp
    31: (("900", PREMIUM), ("906", PREMIUM), ("909", PREMIUM)),       # NL 090x
    33: (("89", PREMIUM), ("81", SHARED), ("82", SHARED)),            # FR 089 / 081, 082
    34: (("803", PREMIUM), ("806", PREMIUM), ("807", PREMIUM), ("905", PREMIUM),
         ("901", SHARED), ("902", SHARED)),                           # ES 80x, 905 / 901, 902
    39: (("89", PREMIUM), ("84", SHARED)),                            # IT 89x / 84x
    41: (("90", PREMIUM), ("84", SHARED)),                            # CH 090x / 084x
    43: (("900", PREMIUM), ("930", PREMIUM), ("939", PREMIUM),
         ("810", SHARED), ("820", SHARED), ("821", SHARED)),          # AT
    44: (("9", PREMIUM), ("118", PREMIUM), ("84", SHARED), ("87", SHARED)),   # UK 09, 118 / 084, 087
    49: (("900", PREMIUM), ("190", PREMIUM), ("137", PREMIUM), ("138", PREMIUM), ("118", PREMIUM),
         ("180", SHARED)),                                            # DE 0900, 0137, 0118 / 0180
    61: (("19", PREMIUM), ("13", SHARED)),                            # AU 190x / 13, 1300
}
NON_GEOGRAPHIC_ALLOWED = {800}                                        # international freephone
NON_GEOGRAPHIC_KIND = {808: SHARED, 979: PREMIUM}
NANP_PREMIUM_EXCHANGES = ("976",)

_WRITTEN = re.compile(r"\+?[0-9().\- ]+")

_IMPOSSIBLE = {
    ValidationResult.TOO_SHORT: "it is too short",
    ValidationResult.TOO_LONG: "it is too long",
    ValidationResult.INVALID_LENGTH: "it has the wrong number of digits",
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "it lacks an area code",
    ValidationResult.INVALID_COUNTRY_CODE: "its country code is unknown",
}

_PARSE_ERRORS = {
    NumberParseException.INVALID_COUNTRY_CODE: "its country code is unknown",
    NumberParseException.NOT_A_NUMBER: "it is not a phone number",
    NumberParseException.TOO_SHORT_AFTER_IDD: "it is too short",
    NumberParseException.TOO_SHORT_NSN: "it is too short",
    NumberParseException.TOO_LONG: "it is too long",
}


@dataclass(frozen=True, slots=True)
class ParsedNumber:
    e164: str      # "+15555551212"
    region: str    # "US"


def parse(text: str, default_country: str, *, strict: bool = False) -> ParsedNumber:
    """Read a fax number as a person writes it; a national number takes ``default_country``."""
    written = text.strip()
    if not _WRITTEN.fullmatch(written) or not any(c.isdigit() for c in written):
        raise NumberError(
            "this is not a fax number: use digits, with an optional leading + "
            "and the separators - . ( ) or space"
        )
    try:
        num = phonenumbers.parse(written, default_country.upper())
    except NumberParseException as exc:
        why = _PARSE_ERRORS.get(exc.error_type, "it is not a phone number")
        raise NumberError(f"this is not a usable fax number: {why}") from exc
    possible = phonenumbers.is_possible_number_with_reason(num)
    if possible != ValidationResult.IS_POSSIBLE:
        costly = costly_range(num.country_code or 0, phonenumbers.national_significant_number(num))
        if costly is not None:           # a costly range of the wrong length: still refused by policy
            raise NumberError(costly, policy=True)
        why = _IMPOSSIBLE.get(possible, "it has the wrong number of digits")
        raise NumberError(f"this is not a usable fax number: {why}")
    if strict and not phonenumbers.is_valid_number(num):
        raise NumberError("this is not a usable fax number: no such number is in service")
    e164 = phonenumbers.format_number(num, PhoneNumberFormat.E164)
    region = phonenumbers.region_code_for_number(num) or phonenumbers.region_code_for_country_code(
        num.country_code or 0
    )
    return ParsedNumber(e164=e164, region=region)


def _place(region: str, e164: str) -> str:
    if region == phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY:
        code = phonenumbers.parse(e164).country_code
        return f"international numbers (+{code})"
    return region


def check_policy(num: ParsedNumber, policy: NumbersConfig) -> None:
    """Raise ``NumberError(policy=True)`` when ``[numbers]`` forbids calling ``num``."""
    allowed = policy.allowed_countries
    if "*" not in allowed and num.region not in allowed:
        listed = ", ".join(allowed) or "none"
        raise NumberError(
            f"calls to {_place(num.region, num.e164)} are not allowed (numbers.allowed_countries: {listed})",
            policy=True
        )
    digits = num.e164.removeprefix("+")
    for prefix in policy.blocked_prefixes:
        if digits.startswith(prefix):
            raise NumberError(f"numbers starting {prefix} are blocked (numbers.blocked_prefixes)", policy=True)
        if len(digits) == 11 and digits.startswith("1") and _nanp_exchange_prefix(prefix) \
                and digits[4:].startswith(prefix[1:]):
            raise NumberError(f"numbers with {prefix[1:]} after the area code are blocked "
                              f"(numbers.blocked_prefixes: {prefix})", policy=True)
    parsed = phonenumbers.parse(num.e164)
    kind = phonenumbers.number_type(parsed)
    if kind == PhoneNumberType.PREMIUM_RATE:
        raise NumberError(PREMIUM, policy=True)
    if kind == PhoneNumberType.SHARED_COST and not policy.allow_shared_cost:
        raise NumberError(SHARED, policy=True)
    costly = costly_range(parsed.country_code or 0, phonenumbers.national_significant_number(parsed))
    if costly is not None and not (costly == SHARED and policy.allow_shared_cost):
        raise NumberError(costly, policy=True)


def costly_range(code: int, national: str) -> str | None:
    """Why a number with calling ``code`` and ``national`` significant number is in a premium,
    shared-cost or satellite/international-network range, whatever its length; None if not."""
    if phonenumbers.region_code_for_country_code(code) == phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY:
        if code in NON_GEOGRAPHIC_ALLOWED:
            return None
        return NON_GEOGRAPHIC_KIND.get(code, NETWORK.format(code=code))
    for prefix, why in RANGES.get(code, ()):
        if national.startswith(prefix):
            return why
    if code == 1 and national[3:6] in NANP_PREMIUM_EXCHANGES:
        return PREMIUM                     # NXX 976 in any area code: local premium lines
    return None


@functools.cache
def _nanp_exchange_prefix(prefix: str) -> bool:
    """``1XYZ...`` where XYZ is no area code (no region has numbers there): an exchange in every one."""
    if len(prefix) < 4 or not prefix.startswith("1"):
        return False
    sample = phonenumbers.parse(f"+1{prefix[1:4]}2345678")
    return phonenumbers.region_code_for_number(sample) is None


def mask(e164: str) -> str:
    """``"+15555551212"`` → ``"…1212"``: enough to tell jobs apart in logs, not enough to dial."""
    digits = "".join(c for c in e164 if c.isdigit())
    return "…" + digits[-4:]
