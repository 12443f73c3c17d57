-- webhooks_emitter SQLite store: schema version 1 (from nothing).
-- Run by SQLiteStore.migrate() statement by statement inside one BEGIN IMMEDIATE
-- transaction, so processes that open a new file at once make it once. The store never
-- holds a secret: event names, delivery ids, bodies and delivery state only.

-- schema_version: what the migrations made; compatible_from: the oldest schema version
-- whose code can still use this file (a migration that only adds keeps it, so the previous
-- release goes on working during a rolling deploy).
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

-- One row per emitter id. queued and failed count its events, kept right in the same
-- transactions as the events, so that max_queue_size holds across processes with one
-- "UPDATE ... WHERE queued < ?". The rest is the state every process shares: paused, the
-- end of a Retry-After hold, the start of the last try, the first failure since the last
-- 2xx, when the next try is due, and the lease (who delivers, its token, until when).
CREATE TABLE emitters (
    id TEXT PRIMARY KEY,
    queued INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    paused INTEGER NOT NULL DEFAULT 0,
    hold_until REAL NOT NULL DEFAULT 0,
    last_try_at REAL NOT NULL DEFAULT 0,
    failing_since REAL,
    next_due REAL NOT NULL DEFAULT 0,
    lease_holder TEXT,
    lease_token TEXT,
    lease_expires REAL
) WITHOUT ROWID;

-- One row per event and emitter. AUTOINCREMENT: a seq is never reused, even after the
-- newest event was delivered, so seqs keep emit order and a replayed event goes to the
-- tail. Delivered events are deleted; given-up ones stay with state 'failed'.
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    emitter_id TEXT NOT NULL,
    event TEXT NOT NULL,
    request_id TEXT NOT NULL,
    body BLOB NOT NULL,
    ordering_key TEXT,
    state TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL DEFAULT 0,
    emitted_at REAL NOT NULL,
    status_code INTEGER,
    error TEXT,
    failed_at REAL
);

-- fetch, failed, high_water, queued_upto and the oldest queued event all read one
-- emitter's events of one state in seq order. There is no index on emitters.queued: it
-- would cost every emit a page write, and poll() scans 10,000 emitters in about 0.5 ms.
CREATE INDEX events_by_emitter ON events (emitter_id, state, seq);
