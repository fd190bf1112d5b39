"""The console's job search as SQL, for both backends: the WHERE clause of a :class:`JobFilter`.

Pure: the placeholder (``?`` for SQLite, ``%s`` for psycopg) and the substring operator (SQLite's
``LIKE``, case-insensitive for ASCII; PostgreSQL's ``ILIKE``) are the backends' only difference.
"""

from __future__ import annotations

from typing import Any

from faxbridge.store.protocol import JobFilter

TEXT_COLUMNS = ("id", "to_number", "sender", "subject", "document", "reason")


def like_literal(text: str) -> str:
    """``text`` as a literal inside a LIKE pattern (``ESCAPE '\\'``)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def where_of(wanted: JobFilter, mark: str, like: str) -> tuple[str, list[Any]]:
    """`` WHERE ...`` (or ``""``) and its arguments for ``wanted``."""
    where: list[str] = []
    args: list[Any] = []
    if wanted.state is not None:
        where.append(f"state = {mark}")
        args.append(wanted.state.value)
    if wanted.source is not None:
        where.append(f"source = {mark}")
        args.append(wanted.source.value)
    for column, value in (("to_number", wanted.number), ("sender", wanted.sender)):
        if value:
            where.append(f"{column} {like} {mark} ESCAPE '\\'")
            args.append(f"%{like_literal(value)}%")
    if wanted.text:
        where.append("(" + " OR ".join(f"{c} {like} {mark} ESCAPE '\\'" for c in TEXT_COLUMNS) + ")")
        args += [f"%{like_literal(wanted.text)}%"] * len(TEXT_COLUMNS)
    return (f" WHERE {' AND '.join(where)}" if where else ""), args
