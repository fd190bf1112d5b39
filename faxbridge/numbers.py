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
- Policy order: allowed countries, then ``blocked_prefixes``, then number type. Only
  ``PREMIUM_RATE`` is refused by type; ``SHARED_COST`` (e.g. UK 084x lines, billed near local
  rates) is allowed: many businesses fax from such numbers, and ``blocked_prefixes`` can bar them.
- Reasons are sentences for the sender (they end up in SMTP 550 replies) and never repeat the
  full number, so they may be logged as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat, PhoneNumberType, ValidationResult

from faxbridge.config import NumbersConfig
from faxbridge.errors import NumberError

__all__ = ["ParsedNumber", "check_policy", "mask", "parse"]

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
            f"calls to {_place(num.region, num.e164)} are not allowed (allowed: {listed})", policy=True
        )
    digits = num.e164.removeprefix("+")
    for prefix in policy.blocked_prefixes:
        if digits.startswith(prefix):
            raise NumberError(f"numbers starting {prefix} are blocked", policy=True)
    if phonenumbers.number_type(phonenumbers.parse(num.e164)) == PhoneNumberType.PREMIUM_RATE:
        raise NumberError("premium-rate numbers are not allowed", policy=True)


def mask(e164: str) -> str:
    """``"+15555551212"`` → ``"…1212"``: enough to tell jobs apart in logs, not enough to dial."""
    digits = "".join(c for c in e164 if c.isdigit())
    return "…" + digits[-4:]
