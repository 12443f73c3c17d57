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
-- ordering_key, emitted_at, max_queue_size, trace_context). Numbered above the emitter's
-- newest seq ever and above every seq in the table (a rightmost seek of the primary key);
-- the events_in trigger counts it and moves last_seq. An id without its emitters row
-- (never registered) takes nothing: append registers it first.
INSERT INTO events (seq, emitter_id, event, request_id, body, ordering_key, emitted_at,
    trace_context)
SELECT max(last_seq, IFNULL((SELECT max(seq) FROM events), 0)) + 1, ?1, ?2, ?3, ?4, ?5, ?6, ?8
FROM emitters WHERE id = ?1 AND queued < ?7;

-- name: register
INSERT OR IGNORE INTO emitters (id) VALUES (?);

-- name: known
SELECT 1 FROM emitters WHERE id = ?;

-- name: state_columns
id, queued, failed, paused, hold_until, last_try_at, failing_since, next_due,
lease_holder, lease_expires,
(SELECT emitted_at FROM events WHERE emitter_id = emitters.id AND state = 'queued'
 ORDER BY seq LIMIT 1),
lease_token, lease_lock

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
-- Free, expired, or already this token's: (holder, token, expires, id, now). The token
-- is also the lease_lock: this process holds its operating-system lock (_holders.py).
UPDATE emitters SET lease_holder = ?1, lease_token = ?2, lease_lock = ?2, lease_expires = ?3
WHERE id = ?4 AND (lease_token IS NULL OR lease_token = ?2 OR lease_expires < ?5);

-- name: acquire_new
INSERT OR IGNORE INTO emitters (id, lease_holder, lease_token, lease_lock, lease_expires)
VALUES (?1, ?2, ?3, ?3, ?4);

-- name: lease_of
SELECT lease_token, lease_lock FROM emitters WHERE id = ?;

-- name: take_over
-- The holder's process is gone (its lock was free): take the lease from that very token,
-- so that of two processes that saw it gone one wins: (holder, token, expires, id, gone).
UPDATE emitters SET lease_holder = ?1, lease_token = ?2, lease_lock = ?2, lease_expires = ?3
WHERE id = ?4 AND lease_token = ?5 AND lease_lock = ?5;

-- name: renew
-- An expired lease nobody took is still this token's: renewing it is taking it back.
UPDATE emitters SET lease_expires = ? WHERE lease_token = ? AND id IN (__IDS__);

-- name: held
SELECT id FROM emitters WHERE lease_token = ? AND id IN (__IDS__);

-- name: release
UPDATE emitters SET lease_holder = NULL, lease_token = NULL, lease_lock = NULL,
    lease_expires = NULL, next_due = ?
WHERE id = ? AND lease_token = ?;

-- name: fetch
SELECT seq, event, request_id, body, ordering_key, attempts, next_at, emitted_at,
    status_code, error, trace_context
FROM events WHERE emitter_id = ? AND state = 'queued' ORDER BY seq LIMIT ?;

-- name: begin_try
-- A try starts only under a live lease of this token, while the emitter is not paused
-- and the event still queued: (attempts, now, next_at, seq, emitter_id, emitter_id, token,
-- now). next_at is when a try may follow if this one never ends (the try's start plus the
-- request timeout, set by the engine): a holder that takes over after a death waits for it.
-- The events_tried trigger sets the emitter's last_try_at.
UPDATE events SET attempts = ?, tried_at = ?, next_at = ?
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
-- Called in seq order, so the copies get new seqs at the tail (numbered as append does),
-- in emit order; the tries, status and error start again.
INSERT INTO events (seq, emitter_id, event, request_id, body, ordering_key, emitted_at,
    trace_context)
SELECT max((SELECT last_seq FROM emitters WHERE id = old.emitter_id),
           (SELECT max(seq) FROM events)) + 1,
    emitter_id, event, request_id, body, ordering_key, emitted_at, trace_context
FROM events AS old WHERE seq = ?;

-- name: delete
DELETE FROM events WHERE seq = ?;

-- name: purge
DELETE FROM events WHERE emitter_id = ?;

