-- webhooks_emitter SQLite store: schema version 3 (from 2). Compatible from 1: it adds
-- columns and renumbers nothing, so the code of versions 1 and 2 goes on working with it
-- during a rolling deploy (their statements name their columns and never read the seq
-- counter AUTOINCREMENT kept).

-- The seq of the newest event ever appended for the emitter (kept by events_in). New
-- events are numbered above it and above every seq in the table, so a seq is never reused
-- without AUTOINCREMENT's counter row, one page write fewer per emit.
ALTER TABLE emitters ADD COLUMN last_seq INTEGER NOT NULL DEFAULT 0;

-- The token whose operating-system lock proves the lease holder alive (see _holders.py):
-- written with lease_token by code that keeps that lock. When it differs from lease_token
-- (a lease taken by code of an older version, which keeps no lock) only lease_expires
-- tells whether the holder may be gone.
ALTER TABLE emitters ADD COLUMN lease_lock TEXT;

UPDATE emitters
SET last_seq = max(
    IFNULL((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0),
    IFNULL((SELECT max(seq) FROM events WHERE emitter_id = emitters.id), 0));

-- The events table again, without AUTOINCREMENT, and with trace_context: the W3C trace
-- context (traceparent, and tracestate if any) current at emit, or NULL.
CREATE TABLE events_3 (
    seq INTEGER PRIMARY KEY,
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
    tried_at REAL,
    trace_context TEXT
);

INSERT INTO events_3 (seq, emitter_id, event, request_id, body, ordering_key, state, attempts,
    next_at, emitted_at, status_code, error, failed_at, tried_at)
SELECT seq, emitter_id, event, request_id, body, ordering_key, state, attempts, next_at,
    emitted_at, status_code, error, failed_at, tried_at
FROM events;

-- Dropping the table drops its indexes and triggers; they are made again below.
DROP TABLE events;

ALTER TABLE events_3 RENAME TO events;

CREATE INDEX events_by_emitter ON events (emitter_id, state, seq);

CREATE INDEX events_failed_by_request ON events (emitter_id, request_id)
    WHERE state = 'failed';

-- One trigger, its statements in this order (SQLite does not say in which order two
-- triggers of one event fire). Code of versions 1 and 2 inserts without a seq: SQLite then
-- takes the largest seq in the table plus one, which may be the seq of an event already
-- delivered and deleted. Such a row is first numbered again, above every seq and the
-- emitter's newest ever (events_seq moves last_seq with it), in the statement that
-- inserted it; its caller reads only the count of rows it inserted, which this does not
-- change. Code of this version always
-- inserts above last_seq, so the first condition is false at once for it. Then, as in
-- version 1, the counters follow, and last_seq follows the emitter's newest event.
CREATE TRIGGER events_in AFTER INSERT ON events BEGIN
    UPDATE events
    SET seq = max((SELECT max(seq) FROM events),
                  (SELECT last_seq FROM emitters WHERE id = NEW.emitter_id)) + 1
    WHERE NEW.seq <= (SELECT last_seq FROM emitters WHERE id = NEW.emitter_id)
        AND seq = NEW.seq;
    UPDATE emitters
    SET queued = queued + (NEW.state = 'queued'), failed = failed + (NEW.state = 'failed'),
        last_seq = max(last_seq, NEW.seq)
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

CREATE TRIGGER events_tried AFTER UPDATE OF tried_at ON events BEGIN
    UPDATE emitters SET last_try_at = NEW.tried_at WHERE id = NEW.emitter_id;
END;

-- A renumbered row (events_renumber) moves the emitter's last_seq up with it.
CREATE TRIGGER events_seq AFTER UPDATE OF seq ON events BEGIN
    UPDATE emitters SET last_seq = max(last_seq, NEW.seq) WHERE id = NEW.emitter_id;
END;
