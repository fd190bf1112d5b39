"""The RCPT decisions of contract section 3, as a table: address in, exact reply out."""

from __future__ import annotations

import ipaddress

import pytest

from faxbridge.config import NumbersConfig
from faxbridge.ingress.smtp import policy as rcpt
from faxbridge.ingress.smtp import replies
from faxbridge.ingress.smtp.policy import Refused, recipient

NUMBERS = NumbersConfig(default_country="US", strict=False, allowed_countries=("US", "CA"),
                        blocked_prefixes=("1900", "1976"), max_pages=200)
DOMAINS = ("fax.local", "fax.example.com")


@pytest.mark.parametrize(("address", "e164"), [
    ("15555551212@fax.local", "+15555551212"),
    ("+15555551212@fax.local", "+15555551212"),
    ("555-555-1212@fax.local", "+15555551212"),
    ("555.555.1212@FAX.LOCAL", "+15555551212"),
    ("1-555-555-1219@fax.example.com", "+15555551219"),
    ('"+1 (555) 555-1212"@fax.local', "+15555551212"),
    ("+16135550123@fax.local", "+16135550123"),          # Canada
], ids=["digits", "plus", "dashes", "dots-upper-domain", "second-domain", "quoted-spaces", "canada"])
def test_readable_numbers(address: str, e164: str) -> None:
    assert recipient(address, DOMAINS, NUMBERS).number.e164 == e164


RELAY = "550 5.7.1 Relaying denied: this server only accepts mail for fax numbers at fax.local, fax.example.com"


@pytest.mark.parametrize(("address", "reply"), [
    ("15555551212@example.com", RELAY),
    ("15555551212@sub.fax.local", RELAY),
    ("alice@gmail.com", RELAY),
    ("@fax.local", RELAY),
    ("1555@fax.local", "550 5.1.1 Bad fax number: this is not a usable fax number: it is too short"),
    ("1-800-FLOWERS@fax.local", "550 5.1.1 Bad fax number: this is not a fax number: use digits, with an "
                                "optional leading + and the separators - . ( ) or space"),
    ("postmaster@fax.local", "550 5.1.1 Bad fax number: this is not a fax number: use digits, with an "
                             "optional leading + and the separators - . ( ) or space"),
    ("+442079460958@fax.local", "550 5.7.1 Fax number not allowed: calls to GB are not allowed "
                                "(numbers.allowed_countries: US, CA)"),
    ("19005551212@fax.local", "550 5.7.1 Fax number not allowed: numbers starting 1900 are blocked "
                              "(numbers.blocked_prefixes)"),
    ("+19765551212@fax.local", "550 5.7.1 Fax number not allowed: numbers starting 1976 are blocked "
                               "(numbers.blocked_prefixes)"),
], ids=["other-domain", "subdomain", "plain-mail", "no-local-part", "too-short", "letters", "postmaster",
        "country", "blocked-1900", "blocked-1976"])
def test_refusals(address: str, reply: str) -> None:
    with pytest.raises(Refused) as caught:
        recipient(address, DOMAINS, NUMBERS)
    assert caught.value.reply == reply


def test_premium_rate_refused_by_type() -> None:
    numbers = NumbersConfig(default_country="GB", strict=False, allowed_countries=("*",), blocked_prefixes=(),
                            max_pages=200)
    with pytest.raises(Refused) as caught:
        recipient("+449098790000@fax.local", DOMAINS, numbers)   # UK 09xx: premium rate
    assert caught.value.reply == "550 5.7.1 Fax number not allowed: premium-rate numbers are not allowed"


@pytest.mark.parametrize(("sender", "patterns", "allowed"), [
    ("alice@example.com", (), True),
    ("", (), True),
    ("alice@example.com", ("alice@example.com",), True),
    ("Alice@Example.COM", ("alice@example.com",), True),
    ("bob@example.com", ("*@example.com",), True),
    ("bob@evil.example.com", ("*@example.com",), False),
    ("bob@example.com.evil", ("*@example.com",), False),
    ("fax-7@example.com", ("fax-*@example.com",), True),
    ("mallory@other.org", ("alice@example.com", "*@example.com"), False),
    ("", ("*@example.com",), False),
], ids=["empty-list", "null-sender-empty-list", "exact", "case", "wildcard", "subdomain-not-matched",
        "suffix-not-matched", "prefix-wildcard", "no-match", "null-sender-with-list"])
def test_allowed_senders(sender: str, patterns: tuple[str, ...], allowed: bool) -> None:
    assert rcpt.sender_allowed(sender, patterns) is allowed


NETS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"), ipaddress.ip_network("10.1.0.0/16"))


@pytest.mark.parametrize(("host", "allowed"), [
    ("127.0.0.1", True), ("127.5.6.7", True), ("::1", True), ("10.1.200.3", True), ("::ffff:10.1.2.3", True),
    ("10.2.0.1", False), ("192.168.1.1", False), ("2001:db8::1", False), (None, False), ("not-an-ip", False),
], ids=["loopback", "loopback-net", "v6-loopback", "lan", "v4-mapped", "other-lan", "private", "v6", "none",
        "garbage"])
def test_allowed_clients(host: str | None, allowed: bool) -> None:
    assert rcpt.client_allowed(host, NETS) is allowed


@pytest.mark.parametrize(("sent", "now", "limit", "over"), [
    (0, 0, 60, False), (59, 0, 60, False), (60, 0, 60, True), (58, 1, 60, False), (58, 2, 60, True),
    (10_000, 5, 0, False),
], ids=["none", "last-one", "at-limit", "with-earlier-rcpt", "rcpt-pushes-over", "no-limit"])
def test_hourly_limit(sent: int, now: int, limit: int, over: bool) -> None:
    assert rcpt.over_limit(sent, now, limit) is over


def test_reply_strings() -> None:
    assert replies.rate_limited(60) == ("451 4.7.1 Too many faxes from this sender in the last hour (limit 60): "
                                     "try again later")
    assert replies.too_big(1000) == "552 5.3.4 Message too big: the limit is 1000 bytes"
    assert replies.CLIENT_DENIED.startswith("550 5.7.1 ")
    assert replies.SENDER_DENIED.startswith("550 5.7.1 ")
