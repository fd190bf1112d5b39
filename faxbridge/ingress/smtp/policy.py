"""The SMTP dialogue's decisions (contract section 3), as pure functions and reply strings.

The replies for these decisions are in ``replies`` (the tests check the exact text the client
hears). No I/O: the shell (``listener``) passes in what it knows (the peer's address, the envelope
sender, the recipient, a count from the store).

Decisions:

- The client address is checked when the client connects; a client outside ``allowed_clients``
  may still say EHLO (and QUIT), but MAIL is answered 550 5.7.1, so the client hears the contract's
  code before any recipient.
- ``allowed_senders`` entries are addresses or wildcards (``*@example.com``, ``fax-*@example.com``),
  matched without regard to case. An empty list allows any sender; a null sender (``MAIL FROM:<>``)
  is allowed only then.
- A recipient's local part is the number as contract section 3 writes it; a domain not in
  ``smtp.domains`` (or a subdomain of one) is refused as relaying, whatever the local part is.
- Senders are compared in lower case, for the per-sender hourly limit too. The same hourly limit
  also counts per client address (a sender can be forged, the client's address cannot).
- An envelope address holding a control character (C0, DEL, C1 such as NEL, and the Unicode line
  and paragraph separators U+2028/U+2029) or bytes that are not UTF-8 is refused at MAIL
  (501 5.1.7) or RCPT (501 5.1.3) before anything else looks at it (contract section 9): such an
  address could never be written into the reply mail's headers.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from faxbridge.config import NumbersConfig
from faxbridge.errors import FaxbridgeError, NumberError
from faxbridge.ingress.smtp.replies import bad_flag, bad_number, forbidden_number, relay_denied
from faxbridge.intake import destination
from faxbridge.numbers import ParsedNumber
from faxbridge.options import FLAGS, split_flags

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_RCPTS_PER_MESSAGE = 100

# C0 controls, DEL, C1 controls (NEL is U+0085), the line and paragraph separators; and the lone
# surrogates U+DC80..U+DCFF, which is how aiosmtpd hands over bytes that are not UTF-8.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NOT_UTF8 = re.compile("[\ud800-\udfff]")


def address_problem(text: str) -> str | None:
    """Why ``text`` (an envelope address, as the client sent it) cannot be an address, or None."""
    if _CONTROL.search(text):
        return "a control character"
    if _NOT_UTF8.search(text):
        return "a byte that is not UTF-8"
    return None











# --- decisions ---------------------------------------------------------------------------------


def client_allowed(host: str | None, networks: Iterable[Network]) -> bool:
    """Whether the peer's IP lies in one of the allowed networks (IPv4-mapped IPv6 counts as IPv4)."""
    if not host:
        return False
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


def is_loopback(host: str | None) -> bool:
    try:
        ip = ipaddress.ip_address((host or "").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def normal_sender(address: str) -> str:
    return address.strip().lower()


def sender_allowed(address: str, patterns: Sequence[str]) -> bool:
    if not patterns:
        return True
    addr = normal_sender(address)
    if not addr:
        return False
    return any(fnmatch.fnmatchcase(addr, p.strip().lower()) for p in patterns)


@dataclass(frozen=True, slots=True)
class Recipient:
    address: str          # as the client wrote it
    number: ParsedNumber
    flags: tuple[str, ...] = ()    # NUMBER+FLAG@DOMAIN: this recipient's fax options (contract section 11)


class Refused(FaxbridgeError):
    """A refusal in the SMTP dialogue; ``reply`` is the full reply line (answered in the dialogue itself)."""

    def __init__(self, reply: str) -> None:
        self.reply = reply
        super().__init__(reply)


def split_address(address: str) -> tuple[str, str]:
    local, _, domain = address.rpartition("@")
    return local, domain.lower().rstrip(".")


def recipient(address: str, domains: Sequence[str], numbers: NumbersConfig) -> Recipient:
    """The fax number a recipient address names, or :class:`Refused` with the contract's reply."""
    local, domain = split_address(address)
    if not local or domain not in {d.lower() for d in domains}:
        raise Refused(relay_denied(domains))
    if local.startswith('"') and local.endswith('"') and len(local) >= 2:
        local = local[1:-1]
    local, flags = split_flags(local)
    unknown = [f for f in flags if f.lower() not in FLAGS]
    if unknown:
        raise Refused(bad_flag(f"+{unknown[0]} is not a fax option; the address flags are "
                               + ", ".join(f"+{f}" for f in FLAGS)))
    try:
        number = destination(local, numbers)
    except NumberError as exc:
        raise Refused(forbidden_number(exc.reason) if exc.policy else bad_number(exc.reason)) from exc
    return Recipient(address, number, tuple(f.lower() for f in flags))


def over_limit(sent_last_hour: int, accepted_now: int, limit: int) -> bool:
    """Whether one more job would pass the per-sender hourly limit (0: no limit)."""
    return limit > 0 and sent_last_hour + accepted_now + 1 > limit
