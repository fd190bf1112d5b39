"""Number parsing and the [numbers] policy (contract section 3): tables."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from faxbridge.config import NumbersConfig, defaults
from faxbridge.errors import NumberError
from faxbridge.numbers import ParsedNumber, check_policy, mask, parse


@pytest.fixture(scope="module")
def policy() -> NumbersConfig:
    return defaults(Path("/nonexistent")).numbers


@pytest.mark.parametrize(
    ("text", "country", "strict", "e164", "region"),
    [
        pytest.param("15555551212", "US", False, "+15555551212", "US", id="us-11-digits-leading-1"),
        pytest.param("+15555551212", "US", False, "+15555551212", "US", id="us-e164"),
        pytest.param("555-555-1212", "US", False, "+15555551212", "US", id="us-dashes"),
        pytest.param("555.555.1212", "US", False, "+15555551212", "US", id="us-dots"),
        pytest.param("(555) 555-1212", "US", False, "+15555551212", "US", id="us-parens-space"),
        pytest.param("1-555-555-1212", "US", False, "+15555551212", "US", id="us-1-dashes"),
        pytest.param("  +1 555 555 1212 ", "US", False, "+15555551212", "US", id="surrounding-space"),
        pytest.param("+442079460958", "US", False, "+442079460958", "GB", id="gb-e164"),
        pytest.param("011 44 20 7946 0958", "US", False, "+442079460958", "GB", id="us-idd-prefix"),
        pytest.param("020 7946 0958", "GB", False, "+442079460958", "GB", id="gb-national"),
        pytest.param("5555551212", "us", False, "+15555551212", "US", id="lower-case-country"),
        pytest.param("+12125551212", "US", True, "+12125551212", "US", id="strict-assigned-range"),
        pytest.param("+14165551212", "US", False, "+14165551212", "CA", id="ca-by-area-code"),
        pytest.param("+447624123456", "US", False, "+447624123456", "IM", id="region-not-main-of-code"),
        pytest.param("+80012345678", "US", False, "+80012345678", "001", id="non-geographic"),
    ],
)
def test_parse_reads(text: str, country: str, strict: bool, e164: str, region: str) -> None:
    assert parse(text, country, strict=strict) == ParsedNumber(e164=e164, region=region)


@pytest.mark.parametrize(
    ("text", "country", "strict", "reason"),
    [
        pytest.param("", "US", False, "not a fax number: use digits", id="empty"),
        pytest.param("fax", "US", False, "not a fax number: use digits", id="letters"),
        pytest.param("1-800-FLOWERS", "US", False, "not a fax number", id="vanity"),
        pytest.param("5555551212x12", "US", False, "not a fax number", id="extension"),
        pytest.param("++15555551212", "US", False, "not a fax number", id="double-plus"),
        pytest.param("555+5551212", "US", False, "not a fax number", id="plus-inside"),
        pytest.param("---", "US", False, "not a fax number", id="separators-only"),
        pytest.param("555", "US", False, "not a usable fax number", id="too-short"),
        pytest.param("5551212", "US", False, "lacks an area code", id="local-only"),
        pytest.param("+1555555121299", "US", False, "too long", id="too-long"),
        pytest.param("+9991234567", "US", False, "country code is unknown", id="unknown-country-code"),
        pytest.param("+15555551212", "US", True, "no such number is in service", id="strict-fictional-555"),
        pytest.param("15555551212", "GB", False, "not a usable fax number", id="us-digits-in-gb"),
    ],
)
def test_parse_refuses(text: str, country: str, strict: bool, reason: str) -> None:
    with pytest.raises(NumberError) as caught:
        parse(text, country, strict=strict)
    assert reason in caught.value.reason
    assert caught.value.policy is False
    digits = "".join(c for c in text if c.isdigit())
    if len(digits) >= 7:
        assert digits not in caught.value.reason, "reasons must not repeat the number"


@pytest.mark.parametrize(
    ("text", "changes", "reason"),
    [
        pytest.param("+15555551212", {}, None, id="us-allowed"),
        pytest.param("+14165551212", {}, None, id="ca-allowed"),
        pytest.param("+442079460958", {}, "calls to GB are not allowed (numbers.allowed_countries: US, CA)",
                     id="gb-refused"),
        pytest.param("+442079460958", {"allowed_countries": ("*",)}, None, id="star-allows-all"),
        pytest.param("+442079460958", {"allowed_countries": ()},
                     "calls to GB are not allowed (numbers.allowed_countries: none)", id="empty-list-allows-none"),
        pytest.param("+80012345678", {}, "calls to international numbers (+800) are not allowed",
                     id="non-geographic-named"),
        pytest.param("+19005551234", {}, "numbers starting 1900 are blocked", id="blocked-1900"),
        pytest.param("+19765551234", {}, "numbers starting 1976 are blocked", id="blocked-1976"),
        pytest.param("+15555551212", {"blocked_prefixes": ("1555",)}, "numbers starting 1555 are blocked",
                     id="blocked-custom"),
        pytest.param("+15555551212", {"blocked_prefixes": ("155555512120",)}, None,
                     id="prefix-longer-than-number"),
        pytest.param("+19005551234", {"blocked_prefixes": ()}, "premium-rate numbers are not allowed",
                     id="premium-us-by-type"),
        pytest.param("+449012345678", {"allowed_countries": ("*",)}, "premium-rate numbers are not allowed",
                     id="premium-gb-by-type"),
        pytest.param("+41840123456", {"allowed_countries": ("CH",)},
                     "shared-cost numbers are not allowed (numbers.allow_shared_cost)", id="shared-cost-refused"),
        pytest.param("+41840123456", {"allowed_countries": ("CH",), "allow_shared_cost": True}, None,
                     id="shared-cost-allowed-by-setting"),
        pytest.param("+442079460958", {"allowed_countries": ("GB",), "blocked_prefixes": ("44",)},
                     "numbers starting 44 are blocked", id="country-allowed-prefix-blocked"),
    ],
)
def test_policy(policy: NumbersConfig, text: str, changes: dict[str, object], reason: str | None) -> None:
    rules = dataclasses.replace(policy, **changes)  # type: ignore[arg-type]
    num = parse(text, "US")
    if reason is None:
        check_policy(num, rules)            # must not raise
        assert num.region in rules.allowed_countries or "*" in rules.allowed_countries
        return
    with pytest.raises(NumberError) as caught:
        check_policy(num, rules)
    assert caught.value.policy is True
    assert caught.value.reason.startswith(reason)


def test_shared_cost_number_type_is_what_the_table_assumes() -> None:
    import phonenumbers

    kind = phonenumbers.number_type(phonenumbers.parse("+41840123456"))
    assert kind == phonenumbers.PhoneNumberType.SHARED_COST


@pytest.mark.parametrize(
    ("e164", "masked"),
    [
        pytest.param("+15555551212", "…1212", id="us"),
        pytest.param("+442079460958", "…0958", id="gb"),
        pytest.param("+123", "…123", id="short"),
        pytest.param("", "…", id="empty"),
    ],
)
def test_mask(e164: str, masked: str) -> None:
    assert mask(e164) == masked


def test_simulator_numbers_of_every_last_digit_are_readable(policy: NumbersConfig) -> None:
    for last in range(10):
        num = parse(f"+1555555121{last}", policy.default_country, strict=policy.strict)
        check_policy(num, policy)
        assert num.e164 == f"+1555555121{last}"


def test_a_destination_read_once_is_remembered_per_policy_and_a_refusal_is_not(policy: NumbersConfig) -> None:
    """intake.destination keeps what it read for the same text and policy; another policy reads again."""
    from faxbridge.intake import destination

    destination.cache_clear()
    first = destination("15555551212", policy)
    assert destination("15555551212", policy) is first
    assert destination.cache_info().hits == 1
    closed = dataclasses.replace(policy, allowed_countries=("GB",))
    with pytest.raises(NumberError, match="calls to US are not allowed"):
        destination("15555551212", closed)
    with pytest.raises(NumberError, match="calls to US are not allowed"):     # refused again, not remembered
        destination("15555551212", closed)
    assert destination.cache_info().currsize == 1
