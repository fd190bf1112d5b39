"""The PostgreSQL store's schema and its migrations (contract section 10).

Migrations are numbered scripts, recorded in a ``migrations`` table (not SQLite's
``user_version``). Whichever daemon opens the database first applies the missing ones, in ONE
transaction, holding the transaction-level advisory lock :data:`MIGRATION_LOCK`: a daemon that
starts meanwhile waits on that lock and then finds the schema current (PostgreSQL's DDL is
transactional, so nobody ever sees half a migration).

Types: times are ``timestamptz``, options/meta/payloads/details ``jsonb``, the surrogate keys
``GENERATED ALWAYS AS IDENTITY``. ``jobs.seq`` is the order jobs were committed in (SQLite's rowid
order, which the claim order falls back on). Documents are rows of ``documents``: a job's fax-ready
PDF in chunks of :data:`CHUNK` bytes, ``(job_id, seq)``.
"""

from __future__ import annotations

from typing import Any

CHUNK = 1 << 20
"""A document is stored, read and written in pieces of this many bytes (1 MiB): never whole."""

MIGRATION_LOCK = 0x6661_7862_0001
"""``pg_advisory_xact_lock`` key held while the schema is created or migrated ("faxb" 1)."""

MIGRATIONS: list[str] = [
    # 1: the first schema (the SQLite store's three migrations in one, plus what several daemons need)
    """
    CREATE TABLE jobs (
        id text PRIMARY KEY,
        seq bigint GENERATED ALWAYS AS IDENTITY,
        source text NOT NULL,
        to_number text NOT NULL,
        state text NOT NULL,
        reason text,
        pages integer NOT NULL,
        paper text NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        provider text NOT NULL,
        provider_id text,
        status_code integer,
        duration_s double precision,
        cost double precision,
        sender text,
        subject text,
        document text NOT NULL,
        options jsonb NOT NULL,
        meta jsonb NOT NULL,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        finished_at timestamptz,
        doc_sha256 text NOT NULL,
        submit_tries integer NOT NULL DEFAULT 0,
        next_attempt_at timestamptz,
        submit_started_at timestamptz,
        submitted_at timestamptz,
        hold text,
        callback_url text,
        recoveries integer NOT NULL DEFAULT 0,
        cancel_requested boolean NOT NULL DEFAULT false,
        version integer NOT NULL DEFAULT 0,
        lease_owner text,
        lease_until timestamptz,
        lease_node text,
        node text,
        intake_node text,
        dedup_key text
    );
    CREATE INDEX jobs_state_due ON jobs (state, next_attempt_at);
    CREATE INDEX jobs_provider_id ON jobs (provider, provider_id);
    CREATE INDEX jobs_created ON jobs (created_at);
    CREATE INDEX jobs_dedup ON jobs (dedup_key, created_at);
    CREATE INDEX jobs_sender ON jobs (sender, created_at);
    CREATE INDEX jobs_destination ON jobs (to_number, state);
    CREATE INDEX jobs_cancel ON jobs (state) WHERE cancel_requested;
    CREATE TABLE events (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        job_id text NOT NULL REFERENCES jobs (id),
        at timestamptz NOT NULL,
        state text NOT NULL,
        event text NOT NULL,
        reason text,
        detail jsonb NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_job ON events (job_id, id);
    CREATE TABLE outbox (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        job_id text NOT NULL REFERENCES jobs (id),
        kind text NOT NULL,
        payload jsonb NOT NULL,
        created_at timestamptz NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        next_at timestamptz NOT NULL,
        delivered_at timestamptz,
        last_error text,
        lease_until timestamptz,
        lease_node text
    );
    CREATE INDEX outbox_due ON outbox (next_at) WHERE delivered_at IS NULL;
    CREATE TABLE kv (key text PRIMARY KEY, value text NOT NULL);
    CREATE TABLE documents (
        job_id text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        seq integer NOT NULL,
        chunk bytea NOT NULL,
        PRIMARY KEY (job_id, seq)
    );
    """,
]


async def migrate(conn: Any) -> int:
    """Create or migrate the schema on ``conn`` (an autocommit ``psycopg.AsyncConnection``) under
    :data:`MIGRATION_LOCK`; returns the schema version. Waits while another opener migrates."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        await conn.execute("CREATE TABLE IF NOT EXISTS migrations ("
                           "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        cur = await conn.execute("SELECT version FROM migrations")
        done = {int(row["version"]) for row in await cur.fetchall()}
        for number, script in enumerate(MIGRATIONS, start=1):
            if number not in done:
                await conn.execute(script)
                await conn.execute("INSERT INTO migrations (version) VALUES (%s)", (number,))
                done.add(number)
    return max(done, default=0)


async def schema_version(conn: Any) -> int:
    """The newest migration applied (0: none, or no schema at all)."""
    cur = await conn.execute("SELECT to_regclass('migrations') AS t")
    row = await cur.fetchone()
    if row is None or row["t"] is None:
        return 0
    cur = await conn.execute("SELECT COALESCE(MAX(version), 0) AS v FROM migrations")
    row = await cur.fetchone()
    return int(row["v"]) if row is not None else 0
