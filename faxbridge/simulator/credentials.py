"""The simulator's fixed test accounts. Documented, not secret: they only open the simulator.

Phaxio: HTTP Basic ``PHAXIO_API_KEY:PHAXIO_API_SECRET`` (or ``api_key``/``api_secret`` fields or
query parameters). Callbacks are signed with ``PHAXIO_CALLBACK_TOKEN``. The inactive key
(``PHAXIO_INACTIVE_KEY`` with the same secret) authenticates, but every ``POST /faxes`` answers
402 "Insufficient funds" and its balance is 0.

Openfax: ``AccountID`` + ``APIKey``. ``OPENFAX_INACTIVE_ACCOUNT_ID`` with the same API key
answers ``AccountInactive`` on send and has no credit.
"""

from __future__ import annotations

PHAXIO_API_KEY = "sim-phaxio-key-0001"
PHAXIO_API_SECRET = "sim-phaxio-secret-0001"
PHAXIO_CALLBACK_TOKEN = "sim-phaxio-callback-token-0001"
PHAXIO_INACTIVE_KEY = "sim-phaxio-key-inactive"
PHAXIO_INACTIVE_SECRET = PHAXIO_API_SECRET

OPENFAX_ACCOUNT_ID = "100200300"
OPENFAX_API_KEY = "sim-openfax-key-0001"
OPENFAX_INACTIVE_ACCOUNT_ID = "100200399"
OPENFAX_INACTIVE_API_KEY = OPENFAX_API_KEY

# Opening balances; each finished fax costs 7 cents per page sent.
PHAXIO_OPENING_BALANCE_CENTS = 10_000
OPENFAX_OPENING_CREDIT = 8956.66
