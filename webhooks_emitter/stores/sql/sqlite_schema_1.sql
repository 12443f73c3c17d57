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

-- One row per emitter id. queued and failed count its events (the triggers below keep
-- them right, in the very statement that changes an event), so that max_queue_size holds
-- across processes with one "INSERT ... WHERE queued < ?". The rest is the state every
-- process shares: paused, the end of a Retry-After hold, the start of the last try, the
-- first failure since the last 2xx, when the next try is due, and the lease (who
-- delivers, its token, until when).
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
-- tail. Delivered events are deleted; given-up ones stay with state 'failed'. tried_at is
-- when its last try started.
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
    failed_at REAL,
    tried_at REAL
);

-- fetch, failed, high_water, queued_upto and the oldest queued event all read one
-- emitter's events of one state in seq order. There is no index on emitters.queued: it
-- would cost every emit a page write, and poll() scans 10,000 emitters in about 0.5 ms.
CREATE INDEX events_by_emitter ON events (emitter_id, state, seq);

-- The counters follow the events within each statement, so every write of an event is a
-- single statement (one call into SQLite, one wait for Python's GIL after it): an event
-- in is one more of its state, an event out (delivered, purged, replayed) one fewer, a
-- change of state (given up) moves one from queued to failed. An event is only ever
-- written for an id that has its emitters row (append makes it first).
CREATE TRIGGER events_in AFTER INSERT ON events BEGIN
    UPDATE emitters
    SET queued = queued + (NEW.state = 'queued'), failed = failed + (NEW.state = 'failed')
    WHERE id = NEW.emitter_id;
END;

CREATE TRIGGER events_out AFTER DELETE ON events BEGIN
    UPDATE emitters
    SET queued = queued - (OLD.state = 'queued'), failed = failed - (OLD.state = 'failed')
    WHERE id = OLD.emitter_id;
END;

CREATE TRIGGER events_state AFTER UPDATE OF state ON events
WHEN OLD.state != NEW.state BEGIN
    UPDATE emitters
    SET queued = queued + (NEW.state = 'queued') - (OLD.state = 'queued'),
        failed = failed + (NEW.state = 'failed') - (OLD.state = 'failed')
    WHERE id = NEW.emitter_id;
END;

-- begin_try records the try on the event; the emitter's last_try_at (for max_rate) follows.
CREATE TRIGGER events_tried AFTER UPDATE OF tried_at ON events BEGIN
    UPDATE emitters SET last_try_at = NEW.tried_at WHERE id = NEW.emitter_id;
END;
