-- The statements of the release that made schema 2 (webhooks_emitter/stores/sql/sqlite_queries.sql
-- as of commit 4c879ee), kept as they were so that tests/test_sqlite_store_writes.py can run
-- the previous release's statements against a file of the current schema (a rolling deploy).

-- webhooks_emitter SQLite store: the statements, one per "-- name:" section.
-- Parameters are "?" in order. The strings stay the same from call to call, so sqlite3's
-- statement cache prepares each once per connection. __IDS__ stands for a list of "?"
-- (padded to a power of two, so that few distinct strings are made).

-- name: table_names
SELECT name FROM sqlite_master;

-- name: meta
SELECT key, value FROM meta;

-- name: set_meta
INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?);

-- name: append
-- One event for one emitter, if it has room: (emitter_id, event, request_id, body,
-- ordering_key, emitted_at, max_queue_size). The events_in trigger counts it. An id
-- without its emitters row (never registered) takes nothing: append registers it first.
INSERT INTO events (emitter_id, event, request_id, body, ordering_key, emitted_at)
SELECT ?1, ?2, ?3, ?4, ?5, ?6
WHERE (SELECT queued FROM emitters WHERE id = ?1) < ?7;

-- name: register
INSERT OR IGNORE INTO emitters (id) VALUES (?);

-- name: known
SELECT 1 FROM emitters WHERE id = ?;

-- name: state_columns
id, queued, failed, paused, hold_until, last_try_at, failing_since, next_due,
lease_holder, lease_expires,
(SELECT emitted_at FROM events WHERE emitter_id = emitters.id AND state = 'queued'
 ORDER BY seq LIMIT 1)

-- name: state
SELECT __STATE_COLUMNS__ FROM emitters WHERE id = ?;

-- name: states
SELECT __STATE_COLUMNS__ FROM emitters ORDER BY id;

-- name: poll
-- One scan of the (small) emitters table, never a query per emitter.
SELECT __STATE_COLUMNS__ FROM emitters WHERE queued > 0 OR paused;

-- name: pause
UPDATE emitters SET paused = 1 WHERE id = ?;

-- name: restart
UPDATE emitters SET paused = 0, hold_until = 0, failing_since = NULL, next_due = 0
WHERE id = ?;

-- name: due_now
UPDATE events SET next_at = 0 WHERE emitter_id = ? AND state = 'queued' AND next_at != 0;

-- name: hold
UPDATE emitters SET hold_until = ? WHERE id = ? AND lease_token = ?;

-- name: failing_since
UPDATE emitters SET failing_since = ? WHERE id = ? AND lease_token = ?;

-- name: acquire
-- Free, expired, or already this token's: (holder, token, expires, id, token, now).
UPDATE emitters SET lease_holder = ?, lease_token = ?, lease_expires = ?
WHERE id = ? AND (lease_token IS NULL OR lease_token = ? OR lease_expires < ?);

-- name: acquire_new
INSERT OR IGNORE INTO emitters (id, lease_holder, lease_token, lease_expires)
VALUES (?, ?, ?, ?);

-- name: renew
-- An expired lease nobody took is still this token's: renewing it is taking it back.
UPDATE emitters SET lease_expires = ? WHERE lease_token = ? AND id IN (__IDS__);

-- name: held
SELECT id FROM emitters WHERE lease_token = ? AND id IN (__IDS__);

-- name: release
UPDATE emitters SET lease_holder = NULL, lease_token = NULL, lease_expires = NULL,
    next_due = ?
WHERE id = ? AND lease_token = ?;

-- name: fetch
SELECT seq, event, request_id, body, ordering_key, attempts, next_at, emitted_at,
    status_code, error
FROM events WHERE emitter_id = ? AND state = 'queued' ORDER BY seq LIMIT ?;

-- name: begin_try
-- A try starts only under a live lease of this token, while the emitter is not paused
-- and the event still queued: (attempts, now, seq, emitter_id, emitter_id, token, now).
-- The events_tried trigger sets the emitter's last_try_at.
UPDATE events SET attempts = ?, tried_at = ?
WHERE seq = ? AND emitter_id = ? AND state = 'queued'
    AND EXISTS (SELECT 1 FROM emitters WHERE id = ? AND lease_token = ?
                AND lease_expires >= ? AND NOT paused);

-- name: retry_later
-- Outcomes are guarded by the token that made the try, not by pause or expiry: a try that
-- was sent is recorded even if the emitter was paused meanwhile.
UPDATE events SET attempts = ?, next_at = ?, status_code = ?, error = ?
WHERE seq = ? AND emitter_id = ? AND state = 'queued'
    AND (SELECT lease_token FROM emitters WHERE id = ?) = ?;

-- name: finish
-- The events_out trigger counts it out; give_up's events_state moves it to failed.
DELETE FROM events
WHERE seq = ? AND emitter_id = ? AND state = 'queued'
    AND (SELECT lease_token FROM emitters WHERE id = ?) = ?;

-- name: give_up
UPDATE events SET state = 'failed', attempts = ?, status_code = ?, error = ?, failed_at = ?
WHERE seq = ? AND emitter_id = ? AND state = 'queued'
    AND (SELECT lease_token FROM emitters WHERE id = ?) = ?;

-- name: high_water
SELECT id, (SELECT seq FROM events WHERE emitter_id = emitters.id AND state = 'queued'
            ORDER BY seq DESC LIMIT 1)
FROM emitters WHERE queued > 0 AND id IN (__IDS__);

-- name: queued_upto
SELECT COUNT(*) FROM events WHERE emitter_id = ? AND state = 'queued' AND seq <= ?;

-- name: failed
SELECT event, request_id, attempts, status_code, error, failed_at, body FROM events
WHERE emitter_id = ? AND state = 'failed' ORDER BY seq LIMIT ?;

-- name: failed_seqs
SELECT seq FROM events WHERE emitter_id = ? AND state = 'failed' ORDER BY seq;

-- name: failed_seq
SELECT seq FROM events WHERE emitter_id = ? AND state = 'failed' AND request_id = ?;

-- name: requeue
-- Called in seq order, so AUTOINCREMENT gives the copies new seqs at the tail, in emit
-- order; the tries, status and error start again.
INSERT INTO events (emitter_id, event, request_id, body, ordering_key, emitted_at)
SELECT emitter_id, event, request_id, body, ordering_key, emitted_at FROM events
WHERE seq = ?;

-- name: delete
DELETE FROM events WHERE seq = ?;

-- name: purge
DELETE FROM events WHERE emitter_id = ?;

