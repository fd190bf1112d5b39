"""What the configured provider allows that intake must know before a job exists.

The one place that says it, so ingress imports no provider module (the SMTP intake is handed
:func:`header_limit` by whoever builds it).
"""

from __future__ import annotations

from faxbridge.config import Config
from faxbridge.providers.openfax import HEADER_MAX as OPENFAX_HEADER_MAX
from faxbridge.providers.phaxio import HEADER_MAX as PHAXIO_HEADER_MAX
from faxbridge.providers.sinch import HEADER_MAX as SINCH_HEADER_MAX


def header_limit(cfg: Config) -> int | None:
    """The provider's fax header length, or None when the configuration fixes the header text.

    Openfax takes the job's header as ``toHeader`` (``provider.openfax.to_header`` fixes it);
    Phaxio and the simulator as ``header_text`` (``provider.phaxio.header_text`` fixes it); Sinch
    as ``headerText`` (``provider.sinch.header_text`` fixes it).
    """
    p = cfg.provider
    if p.kind == "openfax":
        return None if p.openfax.to_header else OPENFAX_HEADER_MAX
    if p.kind == "sinch":
        return None if p.sinch.header_text else SINCH_HEADER_MAX
    return None if p.phaxio.header_text else PHAXIO_HEADER_MAX
