"""Contract section 9, numbers: premium-rate, shared-cost, satellite and international-network
destinations are refused whatever their length (also with ``allowed_countries = ["*"]``), and a NANP
blocked prefix that is no area code (``1976``) blocks that exchange in every area code."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from faxbridge.config import NumbersConfig, defaults
from faxbridge.errors import NumberError
from faxbridge.numbers import check_policy, parse
from tests.ingress import mailkit
from tests.ingress.mailkit import Dialogue, config_of, listening, smtp_settings

PREMIUM = "premium-rate numbers are not allowed"
SHARED = "shared-cost numbers are not allowed (numbers.allow_shared_cost)"


def network(code: int) -> str:
    return f"satellite and international-network numbers (+{code}) are not allowed"


@pytest.fixture(scope="module")
def everywhere() -> NumbersConfig:
    """The defaults, but every country allowed and no blocked prefix: only the costly-range rules refuse."""
    return dataclasses.replace(defaults(Path("/nonexistent")).numbers, allowed_countries=("*",), blocked_prefixes=())


def verdict(text: str, rules: NumbersConfig) -> str | None:
    """None when the number may be faxed; else the policy's reason (an unreadable number fails)."""
    try:
        check_policy(parse(text, rules.default_country, strict=rules.strict), rules)
    except NumberError as exc:
        assert exc.policy, f"refused as unreadable, not by policy: {exc.reason}"
        digits = "".join(c for c in text if c.isdigit())
        assert digits not in exc.reason, "a reason never repeats the number"
        return exc.reason
    return None


@pytest.mark.parametrize(("number", "reason"), [
    # Germany: 0900 premium, whatever the length (phonenumbers finds the long one merely possible)
    pytest.param("+49 900 3 123456", PREMIUM, id="de-900-valid-length"),
    pytest.param("+49 900 3 1234567", PREMIUM, id="de-900-one-digit-longer"),
    pytest.param("+49 900 3 12345678", PREMIUM, id="de-900-two-digits-longer"),
    pytest.param("+49 137 1234567", SHARED, id="de-137-mass-calling"),
    pytest.param("+49 137 12345678901", PREMIUM, id="de-137-too-long-by-table"),
    pytest.param("+49 180 1234567", SHARED, id="de-180-shared-cost"),
    pytest.param("+49 180 123456789012", SHARED, id="de-180-too-long-by-table"),
    pytest.param("+49 118 33", PREMIUM, id="de-118-directory-short"),
    # United Kingdom: 09 premium, 084/087 service charge
    pytest.param("+44 909 879 0000", PREMIUM, id="gb-09-premium"),
    pytest.param("+44 909 879 00001", PREMIUM, id="gb-09-too-long"),
    pytest.param("+44 845 123 4567", PREMIUM, id="gb-0845"),
    pytest.param("+44 871 234 5678", PREMIUM, id="gb-0871"),
    pytest.param("+44 843 123 45678", SHARED, id="gb-084-too-long-by-table"),
    # NANP: NPA 900 and NXX 976 in any area code, without any blocked prefix
    pytest.param("+1 416 976 1234", PREMIUM, id="nanp-976-toronto"),
    pytest.param("+1 212 976 1234", PREMIUM, id="nanp-976-new-york"),
    # other countries of the table
    pytest.param("+33 8 91 23 45 67", PREMIUM, id="fr-089"),
    pytest.param("+41 840 123 456", SHARED, id="ch-084"),
    pytest.param("+41 900 123 4567", PREMIUM, id="ch-090"),
    pytest.param("+43 900 123 4567", PREMIUM, id="at-0900"),
    pytest.param("+39 892 123", PREMIUM, id="it-892-short"),
    pytest.param("+34 806 123 456", PREMIUM, id="es-806"),
    pytest.param("+34 902 123 456", SHARED, id="es-902"),
    pytest.param("+31 900 123 4567", PREMIUM, id="nl-0900"),
    pytest.param("+61 1900 123 456", PREMIUM, id="au-1900"),
    pytest.param("+61 1300 123 456", SHARED, id="au-1300"),
    # satellite and international networks, whatever the length
    pytest.param("+870 773 123 456", network(870), id="inmarsat-870"),
    pytest.param("+881 6 1234 5678", network(881), id="iridium-881"),
    pytest.param("+881 234 5678", network(881), id="gmss-881-too-short"),
    pytest.param("+882 16 1234 5678", network(882), id="thuraya-882"),
    pytest.param("+882 1234 5678", network(882), id="intl-network-882"),
    pytest.param("+883 1234 567 890", network(883), id="intl-network-883"),
    pytest.param("+979 1234 5678", PREMIUM, id="intl-premium-979"),
    pytest.param("+808 1234 5678", SHARED, id="intl-shared-cost-808"),
    # what must still go through with every country allowed
    pytest.param("+1 555 555 1212", None, id="us-fictional-555"),
    pytest.param("+1 416 555 1212", None, id="ca-ordinary"),
    pytest.param("+1 416 900 1234", None, id="nanp-900-exchange-is-not-npa-900"),
    pytest.param("+44 20 7946 0958", None, id="gb-london"),
    pytest.param("+49 30 1234567", None, id="de-berlin"),
    pytest.param("+49 89 1234567", None, id="de-munich"),
    pytest.param("+33 1 23 45 67 89", None, id="fr-paris"),
    pytest.param("+34 91 123 45 67", None, id="es-madrid-9"),
    pytest.param("+61 2 9876 5432", None, id="au-sydney"),
    pytest.param("+800 1234 5678", None, id="intl-freephone-800"),
])
def test_costly_ranges_whatever_their_length(everywhere: NumbersConfig, number: str, reason: str | None) -> None:
    assert verdict(number, everywhere) == reason


@pytest.mark.parametrize(("number", "blocked", "reason"), [
    pytest.param("+1 416 976 1234", ("1976",),
                 "numbers with 976 after the area code are blocked (numbers.blocked_prefixes: 1976)",
                 id="1976-blocks-exchange-976-toronto"),
    pytest.param("+1 212 976 5555", ("1976",),
                 "numbers with 976 after the area code are blocked (numbers.blocked_prefixes: 1976)",
                 id="1976-blocks-exchange-976-new-york"),
    pytest.param("+1 976 555 1234", ("1976",), "numbers starting 1976 are blocked (numbers.blocked_prefixes)",
                 id="1976-blocks-npa-976"),
    pytest.param("+1 416 976 1234", ("1416976",),
                 "numbers starting 1416976 are blocked (numbers.blocked_prefixes)", id="1npanxx-one-exchange"),
    pytest.param("+1 212 555 1212", ("1416976",), None, id="1npanxx-not-another-area-code"),
    pytest.param("+1 212 555 1212", ("1212",), "numbers starting 1212 are blocked (numbers.blocked_prefixes)",
                 id="1npa-blocks-an-area-code"),
    pytest.param("+1 416 212 1234", ("1212",), None, id="1npa-of-a-real-area-code-is-no-exchange-rule"),
    pytest.param("+1 416 900 1234", ("1900",), None, id="1900-is-the-900-area-code-only"),
    pytest.param("+1 900 555 1234", ("1900",), "numbers starting 1900 are blocked (numbers.blocked_prefixes)",
                 id="1900-blocks-npa-900"),
    pytest.param("+1 416 555 1234", ("1555",),
                 "numbers with 555 after the area code are blocked (numbers.blocked_prefixes: 1555)",
                 id="1555-no-area-code-so-an-exchange"),
])
def test_nanp_blocked_prefixes(everywhere: NumbersConfig, number: str, blocked: tuple[str, ...],
                               reason: str | None) -> None:
    assert verdict(number, dataclasses.replace(everywhere, blocked_prefixes=blocked)) == reason


@pytest.mark.parametrize(("number", "changes", "reason"), [
    pytest.param("+41 840 123 456", {"allow_shared_cost": True}, None, id="shared-cost-allowed-by-setting"),
    pytest.param("+49 180 123456789012", {"allow_shared_cost": True}, None, id="shared-by-table-allowed-too"),
    pytest.param("+808 1234 5678", {"allow_shared_cost": True}, None, id="intl-shared-cost-allowed-too"),
    pytest.param("+49 900 3 1234567", {"allow_shared_cost": True}, PREMIUM, id="premium-stays-refused"),
    pytest.param("+881 6 1234 5678", {"allow_shared_cost": True}, network(881), id="satellite-stays-refused"),
    pytest.param("+49 900 3 1234567", {"allowed_countries": ("US", "CA")},
                 "calls to DE are not allowed (numbers.allowed_countries: US, CA)", id="country-rule-first"),
])
def test_the_settings_that_change_the_answer(everywhere: NumbersConfig, number: str,
                                             changes: dict[str, object], reason: str | None) -> None:
    assert verdict(number, dataclasses.replace(everywhere, **changes)) == reason  # type: ignore[arg-type]


async def test_smtp_refuses_costly_numbers_with_550_and_takes_a_good_one(tmp_path: Path) -> None:
    settings = smtp_settings(tmp_path)
    settings["numbers"] = {"allowed_countries": ["*"], "blocked_prefixes": ["1976"]}
    cfg = config_of(tmp_path, settings)
    async with listening(cfg) as bench:
        def dialogue() -> list[str]:
            d = Dialogue(bench.address)
            try:
                return [a.line for a in (
                    d.mail("alice@example.com"),
                    d.rcpt("+4990031234567@fax.local"),
                    d.rcpt("+499003123456@fax.local"),
                    d.rcpt("+8816123456789@fax.local"),
                    d.rcpt("+14169761234@fax.local"),
                    d.rcpt("+15555551212@fax.local"),
                    d.data(mailkit.plain("one line")),
                )]
            finally:
                d.close()
        answers = await asyncio.to_thread(dialogue)
        jobs = bench.store.jobs()
    assert answers[:6] == [
        "250 2.1.0 OK",
        "550 5.7.1 Fax number not allowed: premium-rate numbers are not allowed",
        "550 5.7.1 Fax number not allowed: premium-rate numbers are not allowed",
        "550 5.7.1 Fax number not allowed: satellite and international-network numbers (+881) are not allowed",
        "550 5.7.1 Fax number not allowed: numbers with 976 after the area code are blocked "
        "(numbers.blocked_prefixes: 1976)",
        "250 2.1.5 OK",
    ]
    assert [j.to for j in jobs] == ["+15555551212"]
    assert answers[6] == f"250 2.0.0 Queued as job {jobs[0].id}"
