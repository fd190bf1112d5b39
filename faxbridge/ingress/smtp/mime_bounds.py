"""Cheap limits on a parsed message's shape, checked before any expensive work. Pure.

The stdlib parser only splits a message into parts and header lines (linear, bounded by
``smtp.max_message_size``); the expensive work comes after it: header values parsed by its
pure-Python header parser (4,000 RFC 2231 continuations take seconds), every part decoded,
sniffed and converted. So the parsed tree is measured first, without parsing a header value and
without recursion (:func:`measure`), and refused when it is larger than ``[limits]`` allows
(:func:`verdict`): too many parts, nested too deep, too many header fields in one part, too many
parameters in one ``Content-Type`` / ``Content-Disposition``.

Counting is deliberately crude and only ever over-counts: a parameter is a ``;`` in the raw value,
so a quoted ``;`` in a file name counts too (with the default of 100 no real mail comes near).
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message

from faxbridge.ingress.smtp.replies import too_deep, too_many_headers, too_many_parameters, too_many_parts

PARAMETER_HEADERS = frozenset({"content-type", "content-disposition"})


@dataclass(frozen=True, slots=True)
class MailLimits:
    max_parts: int = 100         # leaves (attachments, text parts) in the whole message
    max_nesting: int = 20        # multiparts and forwarded messages within each other
    max_headers: int = 500       # header fields in one part (or the message's own header)
    max_parameters: int = 100    # parameters in one Content-Type / Content-Disposition


@dataclass(frozen=True, slots=True)
class Shape:
    parts: int
    depth: int
    headers: int       # the most in one part
    parameters: int    # the most in one header


def verdict(shape: Shape, limits: MailLimits) -> str | None:
    """The SMTP refusal for a message of this shape, or None when it is within the limits."""
    if shape.depth > limits.max_nesting:
        return too_deep(limits.max_nesting)
    if shape.parts > limits.max_parts:
        return too_many_parts(limits.max_parts)
    if shape.headers > limits.max_headers:
        return too_many_headers(limits.max_headers)
    if shape.parameters > limits.max_parameters:
        return too_many_parameters(limits.max_parameters)
    return None


def measure(msg: Message, limits: MailLimits) -> Shape:
    """The shape of a parsed message, walked with a stack (no recursion), reading raw header values
    only. Stops early once a count is over its limit (the verdict is known by then)."""
    parts = depth = headers = parameters = 0
    stack: list[tuple[Message, int]] = [(msg, 1)]
    while stack:
        part, level = stack.pop()
        depth = max(depth, level)
        items = list(part.raw_items())
        headers = max(headers, len(items))
        for name, value in items:
            if name.lower() in PARAMETER_HEADERS:
                parameters = max(parameters, str(value).count(";"))
        payload = part.get_payload()
        if isinstance(payload, list):
            stack.extend((child, level + 1) for child in payload if isinstance(child, Message))
        else:
            parts += 1
        if (depth > limits.max_nesting or parts > limits.max_parts or headers > limits.max_headers
                or parameters > limits.max_parameters):
            break
    return Shape(parts, depth, headers, parameters)
