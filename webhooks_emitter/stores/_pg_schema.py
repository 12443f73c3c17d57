"""The PostgreSQL store's schema: its versions, its creation and upgrades, its named queries.

Private to :mod:`webhooks_emitter.stores.postgres`. The SQL lives in ``sql/``:
``postgres_schema_<N>.sql`` takes the tables from version N-1 to N, ``postgres_queries.sql``
holds every query the store runs, one per ``-- name:`` section.

The schema is created on first use (``open``, or the first call) in one transaction under
``pg_advisory_xact_lock``, so processes starting at once on a fresh database queue up and
all but the first find it done. An older schema is upgraded the same way; a newer one that
this library cannot use (its ``compatible_from`` is above :data:`SCHEMA_VERSION`) is
refused. A change keeps the previous release working on the upgraded tables (rolling
deploys): :data:`COMPATIBLE_FROM` says which releases may still use them.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, Optional

from ._base import StoreError
from ._sql import load_queries, read_resource

if TYPE_CHECKING:
    from ._pg_pool import Conn

logger = logging.getLogger("webhooks_emitter.stores.postgres")

#: The version of the tables this library writes.
SCHEMA_VERSION = 2
#: The oldest schema version a library must know to use the tables this one writes: version
#: 2 only adds a nullable column, which the previous release neither reads nor writes.
COMPATIBLE_FROM = 1

#: poll() counts an emitter's queued (and failed) events up to this many.
POLL_COUNT_LIMIT = 1000

_PACKAGE = __package__ or "webhooks_emitter.stores"


def load_sql(name: str, schema: str) -> str:
    """The text of ``sql/<name>`` for ``schema`` (``__SCHEMA__`` replaced, quoted)."""
    return read_resource(_PACKAGE, f"sql/{name}", {"__SCHEMA__": f'"{schema}"'})


def queries(schema: str) -> dict[str, str]:
    """The named queries of ``sql/postgres_queries.sql`` for ``schema``, read by the loader
    both SQL stores share (each statement one line), fragments spliced in."""
    found = load_queries(_PACKAGE, "sql/postgres_queries.sql", {"__SCHEMA__": f'"{schema}"'})
    # Fragments, spliced into the queries that use them.
    holder_gone = found.pop("holder_gone")
    async_commit = found.pop("async_commit")
    append_rows = found.pop("append_rows")
    append_one_row = found.pop("append_one_row")
    columns = found.pop("state_columns").replace("__HOLDER_GONE__", holder_gone)
    for name, query in found.items():
        limit = f"LIMIT {POLL_COUNT_LIMIT}" if name == "poll" else ""
        state_columns = columns.replace("__COUNT_LIMIT__", limit)
        found[name] = (
            query.replace("__STATE_COLUMNS__", state_columns)
            .replace("__HOLDER_GONE__", holder_gone)
            .replace("__APPEND_ROWS__", append_rows)
            .replace("__APPEND_ONE_ROW__", append_one_row)
            .replace("__ASYNC_COMMIT__", async_commit)
        )
    return found


def advisory_key(schema: str) -> int:
    """The key of the advisory lock under which ``schema`` is created or upgraded."""
    digest = hashlib.sha256(f"webhooks_emitter:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def newer_error(store: str, found: tuple[int, int]) -> StoreError:
    """The error for a schema newer than this library can use."""
    return StoreError(
        f"{store}: the store's schema is at version {found[0]}, newer than this "
        f"library understands (it needs {found[1]}, this library knows up to "
        f"{SCHEMA_VERSION}): upgrade webhooks_emitter"
    )


def read_version(conn: Conn, schema: str, sql: dict[str, str]) -> Optional[tuple[int, int]]:
    """``(version, compatible_from)`` of the tables in ``schema``, or None: no tables."""
    exists = conn.execute(sql["table_exists"], {"schema": schema}).fetchone()
    if not exists or not exists[0]:
        return None
    row = conn.execute(sql["version"]).fetchone()
    return (int(row[0]), int(row[1])) if row else None


def migrate(conn: Conn, schema: str, sql: dict[str, str], store: str) -> int:
    """Create or upgrade the tables in ``schema`` to :data:`SCHEMA_VERSION`, in one
    transaction under an advisory lock; the version now in the store.

    Raises:
        StoreError: the schema is newer than this library can use.
        psycopg.Error: the database refused.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key(schema),))
        conn.execute("SET LOCAL statement_timeout = 0")  # a long upgrade is fine
        found = read_version(conn, schema, sql)
        if found is not None and found[1] > SCHEMA_VERSION:
            raise newer_error(store, found)
        current = found[0] if found is not None else 0
        if current == 0:
            exists = conn.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE SCHEMA "{schema}"')
        for version in range(current + 1, SCHEMA_VERSION + 1):
            conn.execute(load_sql(f"postgres_schema_{version}.sql", schema))
            logger.info(
                "%s: schema upgraded to version %d",
                store,
                version,
                extra={"store": store, "schema_version": version},
            )
        if current < SCHEMA_VERSION:
            conn.execute(
                f'INSERT INTO "{schema}".schema_version '
                "(version, compatible_from) VALUES (%(v)s, %(c)s) "
                "ON CONFLICT (singleton) DO UPDATE SET version = EXCLUDED.version, "
                "compatible_from = EXCLUDED.compatible_from, upgraded_at = now()",
                {"v": SCHEMA_VERSION, "c": COMPATIBLE_FROM},
            )
        return max(current, SCHEMA_VERSION)
