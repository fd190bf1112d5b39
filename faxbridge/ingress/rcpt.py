"""Old import path of :mod:`faxbridge.ingress.smtp.policy`, kept for ``notify.mail`` (remove once it
imports from there)."""

from faxbridge.ingress.smtp.policy import address_problem, sender_allowed

__all__ = ["address_problem", "sender_allowed"]
