"""The simulator's fixed test accounts. Documented, not secret: they only open the simulator.

Phaxio: HTTP Basic ``PHAXIO_API_KEY:PHAXIO_API_SECRET`` (or ``api_key``/``api_secret`` fields or
query parameters). The callback token is *not* one of them: whoever knows it can forge a callback
that finishes a job, so each :class:`~faxbridge.simulator.Simulator` has its own
(``Simulator.callback_token``, random unless given; the daemon's built-in simulator hands it to the
web server in-process, and ``faxbridge simulate`` takes ``$FAXBRIDGE_SIMULATOR_CALLBACK_TOKEN``,
see :func:`callback_token`). The inactive key
(``PHAXIO_INACTIVE_KEY`` with the same secret) authenticates, but every ``POST /faxes`` answers
402 "Insufficient funds" and its balance is 0. The test key (``PHAXIO_TEST_KEY``) works like the
normal one, but its faxes say ``is_test`` (a test key left in production).

Sinch (Fax API v3): HTTP Basic ``SINCH_KEY_ID:SINCH_KEY_SECRET`` under
``/v3/projects/SINCH_PROJECT_ID``; another project id answers 404. ``SINCH_INACTIVE_KEY_ID`` (same
secret) authenticates, reads work, and every ``POST /faxes`` answers 402 (out of funds). Sinch
signs no callbacks: the daemon's URL carries its own token, nothing is shared with the simulator.

Openfax: ``AccountID`` + ``APIKey``. ``OPENFAX_INACTIVE_ACCOUNT_ID`` with the same API key
answers ``AccountInactive`` on send and has no credit.
"""

from __future__ import annotations

import os
import secrets

PHAXIO_API_KEY = "sim-phaxio-key-0001"
PHAXIO_API_SECRET = "sim-phaxio-secret-0001"
CALLBACK_TOKEN_ENV = "FAXBRIDGE_SIMULATOR_CALLBACK_TOKEN"
PHAXIO_INACTIVE_KEY = "sim-phaxio-key-inactive"
PHAXIO_INACTIVE_SECRET = PHAXIO_API_SECRET
PHAXIO_TEST_KEY = "sim-phaxio-test-key-0001"    # a test key: its faxes say is_test (and are played as usual)
PHAXIO_TEST_SECRET = PHAXIO_API_SECRET

SINCH_PROJECT_ID = "sim-sinch-project-0001"
SINCH_KEY_ID = "sim-sinch-key-0001"
SINCH_KEY_SECRET = "sim-sinch-secret-0001"
SINCH_INACTIVE_KEY_ID = "sim-sinch-key-inactive"

OPENFAX_ACCOUNT_ID = "100200300"
OPENFAX_API_KEY = "sim-openfax-key-0001"
OPENFAX_INACTIVE_ACCOUNT_ID = "100200399"
OPENFAX_INACTIVE_API_KEY = OPENFAX_API_KEY

# Opening balances; each finished fax costs 7 cents per page sent.
PHAXIO_OPENING_BALANCE_CENTS = 10_000
OPENFAX_OPENING_CREDIT = 8956.66


def callback_token(given: str | None = None) -> str:
    """The token a simulator signs its Phaxio callbacks with: ``given``, else
    ``$FAXBRIDGE_SIMULATOR_CALLBACK_TOKEN`` (how a standalone simulator and the daemon that
    listens for its callbacks agree on one), else a fresh random one, known to this process only."""
    return given or os.environ.get(CALLBACK_TOKEN_ENV) or secrets.token_urlsafe(32)
