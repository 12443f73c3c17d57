-- webhooks_emitter PostgreSQL store: the queries, one per "-- name:" section.
-- __SCHEMA__ stands for the quoted schema name; parameters are %(name)s (psycopg 3,
-- psycopg2 and SQLAlchemy's exec_driver_sql all take them). Each query is one statement,
-- so it is atomic in autocommit mode and costs one round trip.

-- name: version
SELECT version, compatible_from FROM __SCHEMA__.schema_version;

-- name: table_exists
-- Read from pg_class with this statement's snapshot, not to_regclass(): after waiting for
-- the advisory lock, to_regclass() may still answer from a stale negative catalog cache
-- entry and miss the table the previous lock holder just committed.
SELECT EXISTS (
    SELECT 1 FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = %(schema)s AND c.relname = 'schema_version'
);

-- name: append_rows
-- Shared by append and append_notify: one event for each target that has room, in target
-- order, answering the ids stored. One statement, prepared (planned once per session), with
-- the room check inside it. The room check takes no lock, so emits never wait for each
-- other; two emits racing for an emitter's last place may both take it (max_queue_size is
-- exceeded by at most the number of concurrent emits). It costs two index probes while a
-- queue is surely short (its seq range is below max_size; ORDER BY ... LIMIT 1 rather than
-- min() and max(), which the planner may answer by reading the whole queue), and counts the
-- queue (up to max_size index entries) only when it may be full: OR is evaluated left to
-- right and stops at the first true.
WITH stored AS (
    INSERT INTO __SCHEMA__.events
        (emitter_id, event, request_id, body, ordering_key, emitted_at, trace_context)
    SELECT t.emitter_id, %(event)s::text, %(request_id)s::text, %(body)s::bytea,
        %(ordering_key)s::text, %(emitted_at)s::double precision, %(trace_context)s::text
    FROM unnest(%(emitter_ids)s::text[], %(max_sizes)s::bigint[]) WITH ORDINALITY
        AS t(emitter_id, max_size, n)
    WHERE t.max_size >= 1 AND (
        coalesce(
            (SELECT e.seq FROM __SCHEMA__.events e
             WHERE e.emitter_id = t.emitter_id AND e.failed_at IS NULL
             ORDER BY e.emitter_id DESC, e.seq DESC LIMIT 1)
            - (SELECT e.seq FROM __SCHEMA__.events e
               WHERE e.emitter_id = t.emitter_id AND e.failed_at IS NULL
               ORDER BY e.emitter_id, e.seq LIMIT 1) + 1,
            0) < t.max_size
        OR (SELECT count(*) FROM (
                SELECT 1 FROM __SCHEMA__.events e
                WHERE e.emitter_id = t.emitter_id AND e.failed_at IS NULL
                LIMIT t.max_size) AS queue) < t.max_size)
    ORDER BY t.n
    RETURNING emitter_id
)

-- name: append_one_row
-- The same for one target (the usual emit), without unnest(): binding arrays and planning
-- over them cost about 200 us more per emit than these scalar parameters (measured). It
-- also answers the queue's depth as the room check saw it (an upper bound: the seq range),
-- which the store uses to skip the check on the next emits (PostgresStore.append).
WITH queue AS (
    SELECT coalesce(
        (SELECT e.seq FROM __SCHEMA__.events e
         WHERE e.emitter_id = %(emitter_id)s::text AND e.failed_at IS NULL
         ORDER BY e.emitter_id DESC, e.seq DESC LIMIT 1)
        - (SELECT e.seq FROM __SCHEMA__.events e
           WHERE e.emitter_id = %(emitter_id)s::text AND e.failed_at IS NULL
           ORDER BY e.emitter_id, e.seq LIMIT 1) + 1,
        0) AS depth
), stored AS (
    INSERT INTO __SCHEMA__.events
        (emitter_id, event, request_id, body, ordering_key, emitted_at, trace_context)
    SELECT %(emitter_id)s::text, %(event)s::text, %(request_id)s::text, %(body)s::bytea,
        %(ordering_key)s::text, %(emitted_at)s::double precision, %(trace_context)s::text
    FROM queue
    WHERE %(max_size)s::bigint >= 1 AND (
        queue.depth < %(max_size)s::bigint
        OR (SELECT count(*) FROM (
                SELECT 1 FROM __SCHEMA__.events e
                WHERE e.emitter_id = %(emitter_id)s::text AND e.failed_at IS NULL
                LIMIT %(max_size)s::bigint) AS counted) < %(max_size)s::bigint)
    RETURNING 1
)

-- name: append_one_checked
__APPEND_ONE_ROW__
SELECT (SELECT count(*) FROM stored), (SELECT depth FROM queue);

-- name: append_one_checked_notify
__APPEND_ONE_ROW__
SELECT (SELECT count(*) FROM stored), (SELECT depth FROM queue),
    (SELECT count(*) FROM (SELECT pg_notify(%(channel)s, '') FROM stored LIMIT 1) AS woken);

-- name: append_one_fast
-- One target whose queue is known to be far from full (see PostgresStore.append): the
-- insert alone, as an application would write it.
INSERT INTO __SCHEMA__.events
    (emitter_id, event, request_id, body, ordering_key, emitted_at, trace_context)
VALUES (%(emitter_id)s::text, %(event)s::text, %(request_id)s::text, %(body)s::bytea,
    %(ordering_key)s::text, %(emitted_at)s::double precision, %(trace_context)s::text);

-- name: append_one_fast_notify
WITH stored AS (
    INSERT INTO __SCHEMA__.events
        (emitter_id, event, request_id, body, ordering_key, emitted_at, trace_context)
    VALUES (%(emitter_id)s::text, %(event)s::text, %(request_id)s::text, %(body)s::bytea,
        %(ordering_key)s::text, %(emitted_at)s::double precision, %(trace_context)s::text)
    RETURNING 1
)
SELECT count(*), (SELECT count(*) FROM (SELECT pg_notify(%(channel)s, '') FROM stored)
    AS woken) FROM stored;

-- name: append
-- An emit with its own transaction, without a notification (see _pg_notify.py).
__APPEND_ROWS__
SELECT array_agg(emitter_id) FROM stored;

-- name: append_notify
-- The same, and one notification on the channel when anything was stored (delivered at
-- commit, never after a rollback; merged with the transaction's others).
__APPEND_ROWS__
SELECT (SELECT array_agg(emitter_id) FROM stored),
    (SELECT count(*) FROM (SELECT pg_notify(%(channel)s, '') FROM stored LIMIT 1) AS woken);

-- name: register
INSERT INTO __SCHEMA__.emitters (emitter_id) VALUES (%(emitter_id)s)
ON CONFLICT (emitter_id) DO NOTHING;

-- name: queued_count
SELECT count(*) FROM __SCHEMA__.events
WHERE emitter_id = %(emitter_id)s AND failed_at IS NULL;

-- name: known
SELECT EXISTS (SELECT 1 FROM __SCHEMA__.emitters WHERE emitter_id = %(emitter_id)s)
    OR EXISTS (SELECT 1 FROM __SCHEMA__.events
               WHERE emitter_id = %(emitter_id)s AND failed_at IS NULL)
    OR EXISTS (SELECT 1 FROM __SCHEMA__.events
               WHERE emitter_id = %(emitter_id)s AND failed_at IS NOT NULL);

-- name: state_columns
-- The shared state of each id of the relation ids(id) that the query using it defines.
-- The emitter's row is looked up per id (LIMIT keeps the planner from joining the whole
-- table); __COUNT_LIMIT__ bounds the counts of poll().
SELECT ids.id,
    (SELECT count(*) FROM (
        SELECT 1 FROM __SCHEMA__.events e
        WHERE e.emitter_id = ids.id AND e.failed_at IS NULL __COUNT_LIMIT__) AS queued),
    (SELECT count(*) FROM (
        SELECT 1 FROM __SCHEMA__.events e
        WHERE e.emitter_id = ids.id AND e.failed_at IS NOT NULL __COUNT_LIMIT__) AS failed),
    coalesce(m.paused, false),
    coalesce(m.hold_until, 0),
    coalesce(m.last_try_at, 0),
    m.failing_since,
    coalesce(m.next_due, 0),
    (SELECT e.emitted_at FROM __SCHEMA__.events e
     WHERE e.emitter_id = ids.id AND e.failed_at IS NULL
     ORDER BY e.emitter_id, e.seq LIMIT 1),
    CASE WHEN m.lease_expires > clock_timestamp() AND NOT __HOLDER_GONE__
        THEN m.lease_holder END
FROM ids LEFT JOIN LATERAL (
    SELECT * FROM __SCHEMA__.emitters em WHERE em.emitter_id = ids.id LIMIT 1
) AS m ON true;

-- name: state
WITH ids(id) AS (SELECT %(emitter_id)s::text)
__STATE_COLUMNS__;

-- name: poll
-- The emitters with queued events, found by a loose index scan of events_queued (one
-- index descent per such emitter, whatever the number of their events or of emitters
-- without any), and the paused ones (a partial index). Counts stop at 1,000 (poll finds
-- who has work; state() counts exactly).
WITH RECURSIVE queued_ids(id) AS (
    (SELECT emitter_id FROM __SCHEMA__.events
     WHERE failed_at IS NULL ORDER BY emitter_id LIMIT 1)
    UNION ALL
    SELECT (SELECT e.emitter_id FROM __SCHEMA__.events e
            WHERE e.failed_at IS NULL AND e.emitter_id > q.id
            ORDER BY e.emitter_id LIMIT 1)
    FROM queued_ids q WHERE q.id IS NOT NULL
), ids(id) AS (
    SELECT id FROM queued_ids WHERE id IS NOT NULL
    UNION
    SELECT emitter_id FROM __SCHEMA__.emitters WHERE paused
)
__STATE_COLUMNS__;

-- name: states
WITH RECURSIVE queued_ids(id) AS (
    (SELECT emitter_id FROM __SCHEMA__.events
     WHERE failed_at IS NULL ORDER BY emitter_id LIMIT 1)
    UNION ALL
    SELECT (SELECT e.emitter_id FROM __SCHEMA__.events e
            WHERE e.failed_at IS NULL AND e.emitter_id > q.id
            ORDER BY e.emitter_id LIMIT 1)
    FROM queued_ids q WHERE q.id IS NOT NULL
), failed_ids(id) AS (
    (SELECT emitter_id FROM __SCHEMA__.events
     WHERE failed_at IS NOT NULL ORDER BY emitter_id LIMIT 1)
    UNION ALL
    SELECT (SELECT e.emitter_id FROM __SCHEMA__.events e
            WHERE e.failed_at IS NOT NULL AND e.emitter_id > f.id
            ORDER BY e.emitter_id LIMIT 1)
    FROM failed_ids f WHERE f.id IS NOT NULL
), ids(id) AS (
    SELECT id FROM queued_ids WHERE id IS NOT NULL
    UNION
    SELECT id FROM failed_ids WHERE id IS NOT NULL
    UNION
    SELECT emitter_id FROM __SCHEMA__.emitters
)
__STATE_COLUMNS__;

-- name: set_paused
-- Restarting also ends a hold, clears failing_since and makes waiting events due now.
WITH emitter AS (
    INSERT INTO __SCHEMA__.emitters AS m (emitter_id, paused)
    VALUES (%(emitter_id)s, %(paused)s)
    ON CONFLICT (emitter_id) DO UPDATE SET
        paused = EXCLUDED.paused,
        hold_until = CASE WHEN EXCLUDED.paused THEN m.hold_until ELSE 0 END,
        failing_since = CASE WHEN EXCLUDED.paused THEN m.failing_since END,
        next_due = CASE WHEN EXCLUDED.paused THEN m.next_due ELSE 0 END
    RETURNING 1
), due AS (
    UPDATE __SCHEMA__.events SET next_at = 0
    WHERE NOT %(paused)s AND emitter_id = %(emitter_id)s AND failed_at IS NULL AND next_at <> 0
    RETURNING 1
), woken AS (
    SELECT pg_notify(%(channel)s, '')
)
SELECT (SELECT count(*) FROM emitter), (SELECT count(*) FROM due), (SELECT count(*) FROM woken);

-- name: set_hold
UPDATE __SCHEMA__.emitters SET hold_until = %(until)s
WHERE emitter_id = %(emitter_id)s AND lease_token = %(token)s;

-- name: set_failing_since
UPDATE __SCHEMA__.emitters SET failing_since = %(since)s
WHERE emitter_id = %(emitter_id)s AND lease_token = %(token)s;

-- name: holder_gone
-- Whether the session that vouches for the lease of row m has ended (its process is gone).
-- The token ends in "/<key>": the key of a session-level advisory lock the holder keeps on
-- a connection of its own (SessionLock in _pg_pool.py). If the lock can be taken for this
-- statement's transaction, no session holds it: the holder is gone. Tokens without "/"
-- (the previous release's) never count as gone. Evaluated last (AND and OR stop early), so
-- only leases that are otherwise held are checked; the lock taken, if any, is let go when
-- the statement ends. A fragment of other queries, not a query.
(strpos(m.lease_token, '/') > 0
    AND pg_try_advisory_xact_lock(split_part(m.lease_token, '/', 2)::bigint))

-- name: acquire
-- Takes the lease if it is free, expired, released, already ours, or its holder's session
-- has ended, in one statement: of two processes racing for it, the second re-checks the
-- condition on the row the first wrote (READ COMMITTED) and gets nothing.
INSERT INTO __SCHEMA__.emitters AS m (emitter_id, lease_holder, lease_token, lease_expires)
VALUES (%(emitter_id)s, %(holder)s, %(token)s,
        clock_timestamp() + %(ttl)s * interval '1 second')
ON CONFLICT (emitter_id) DO UPDATE SET
    lease_holder = EXCLUDED.lease_holder,
    lease_token = EXCLUDED.lease_token,
    lease_expires = EXCLUDED.lease_expires
WHERE m.lease_token IS NULL
    OR m.lease_token = EXCLUDED.lease_token
    OR m.lease_expires IS NULL
    OR m.lease_expires <= clock_timestamp()
    OR __HOLDER_GONE__
RETURNING 1;

-- name: renew
-- A lease that expired is renewed as long as nobody took it (the token is still ours);
-- a released one (lease_expires NULL) is not.
UPDATE __SCHEMA__.emitters
SET lease_expires = clock_timestamp() + %(ttl)s * interval '1 second'
WHERE emitter_id = ANY(%(emitter_ids)s::text[])
    AND lease_token = %(token)s AND lease_expires IS NOT NULL
RETURNING emitter_id;

-- name: release
UPDATE __SCHEMA__.emitters SET lease_expires = NULL, next_due = %(next_due)s
WHERE emitter_id = %(emitter_id)s AND lease_token = %(token)s;

-- name: fetch
SELECT seq, event, request_id, body, ordering_key, attempts, next_at, emitted_at,
    status_code, error, trace_context
FROM __SCHEMA__.events
WHERE emitter_id = %(emitter_id)s AND failed_at IS NULL AND seq <> ALL(%(skip)s::bigint[])
    AND EXISTS (SELECT 1 FROM __SCHEMA__.emitters m
                WHERE m.emitter_id = %(emitter_id)s AND m.lease_token = %(token)s
                    AND m.lease_expires > clock_timestamp())
ORDER BY emitter_id, seq
LIMIT %(limit)s;

-- name: queued_events
-- What an operator looks at (the dashboard): the oldest queued events, under no lease.
SELECT seq, event, request_id, body, ordering_key, attempts, next_at, emitted_at,
    status_code, error, trace_context
FROM __SCHEMA__.events
WHERE emitter_id = %(emitter_id)s AND failed_at IS NULL
ORDER BY emitter_id, seq
LIMIT %(limit)s;

-- name: async_commit
-- In the RETURNING clause of the delivery-state writes below (begin_try and the outcomes):
-- for each row written, makes the statement's transaction (autocommit: the statement's
-- own) commit without waiting for its WAL flush, as settle() does with SET LOCAL. No extra
-- statement, no round trip, and only when something was written. What a server crash may
-- then cost is in PostgresStore.settle's docstring; emits stay fully durable. A fragment,
-- not a query.
set_config('synchronous_commit', 'off', true)

-- name: begin_try
-- One statement checks the lease (live, ours), the pause and the event, then counts the
-- try and sets next_at to when the try will surely have ended (its start plus
-- request_timeout): a process that takes the lease after this one's death waits for it, so
-- the receiver never sees two tries of one emitter overlap. Nothing is written when any
-- check fails.
WITH emitter AS (
    UPDATE __SCHEMA__.emitters m SET last_try_at = %(now)s
    WHERE m.emitter_id = %(emitter_id)s AND m.lease_token = %(token)s
        AND m.lease_expires > clock_timestamp() AND NOT m.paused
        AND EXISTS (SELECT 1 FROM __SCHEMA__.events e
                    WHERE e.seq = %(seq)s AND e.emitter_id = %(emitter_id)s
                        AND e.failed_at IS NULL)
    RETURNING 1
)
UPDATE __SCHEMA__.events e SET attempts = %(attempts)s, next_at = %(next_at)s
FROM emitter
WHERE e.seq = %(seq)s AND e.emitter_id = %(emitter_id)s AND e.failed_at IS NULL
RETURNING __ASYNC_COMMIT__;

-- name: retry_later
UPDATE __SCHEMA__.events e
SET attempts = %(attempts)s, next_at = %(next_at)s, status_code = %(status_code)s,
    error = %(error)s
WHERE e.seq = %(seq)s AND e.emitter_id = %(emitter_id)s AND e.failed_at IS NULL
    AND EXISTS (SELECT 1 FROM __SCHEMA__.emitters m
                WHERE m.emitter_id = %(emitter_id)s AND m.lease_token = %(token)s)
RETURNING __ASYNC_COMMIT__;

-- name: finish
DELETE FROM __SCHEMA__.events e
WHERE e.seq = %(seq)s AND e.emitter_id = %(emitter_id)s AND e.failed_at IS NULL
    AND EXISTS (SELECT 1 FROM __SCHEMA__.emitters m
                WHERE m.emitter_id = %(emitter_id)s AND m.lease_token = %(token)s)
RETURNING __ASYNC_COMMIT__;

-- name: give_up
UPDATE __SCHEMA__.events e
SET attempts = %(attempts)s, status_code = %(status_code)s, error = %(error)s,
    failed_at = %(failed_at)s
WHERE e.seq = %(seq)s AND e.emitter_id = %(emitter_id)s AND e.failed_at IS NULL
    AND EXISTS (SELECT 1 FROM __SCHEMA__.emitters m
                WHERE m.emitter_id = %(emitter_id)s AND m.lease_token = %(token)s)
RETURNING __ASYNC_COMMIT__;

-- name: high_water
-- ORDER BY ... LIMIT 1 rather than max(): one index probe whatever the statistics say.
SELECT ids.id,
    (SELECT e.seq FROM __SCHEMA__.events e
     WHERE e.emitter_id = ids.id AND e.failed_at IS NULL
     ORDER BY e.emitter_id DESC, e.seq DESC LIMIT 1)
FROM unnest(%(emitter_ids)s::text[]) AS ids(id);

-- name: queued_upto
SELECT count(*) FROM __SCHEMA__.events
WHERE emitter_id = %(emitter_id)s AND failed_at IS NULL AND seq <= %(seq)s;

-- name: failed
SELECT event, request_id, attempts, status_code, error, failed_at, body
FROM __SCHEMA__.events
WHERE emitter_id = %(emitter_id)s AND failed_at IS NOT NULL
ORDER BY emitter_id, seq
LIMIT %(limit)s;

-- name: replay
-- Moves the chosen dead letters to the tail of the queue, in their emit order: each gets
-- a new seq, drawn in the order of the old ones.
WITH chosen AS (
    SELECT seq FROM __SCHEMA__.events
    WHERE emitter_id = %(emitter_id)s AND failed_at IS NOT NULL
        AND (%(all)s OR request_id = ANY(%(request_ids)s::text[]))
    ORDER BY seq
    FOR UPDATE
), renumbered AS (
    SELECT ordered.seq AS old_seq, nextval('__SCHEMA__.events_seq') AS new_seq
    FROM (SELECT seq FROM chosen ORDER BY seq) AS ordered
), moved AS (
    UPDATE __SCHEMA__.events e
    SET seq = r.new_seq, failed_at = NULL, attempts = 0, next_at = 0, status_code = NULL,
        error = NULL
    FROM renumbered r
    WHERE e.seq = r.old_seq
    RETURNING 1
), woken AS (
    SELECT pg_notify(%(channel)s, '') FROM (SELECT 1 FROM moved LIMIT 1) AS any_moved
)
SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM woken);

-- name: purge
WITH purged AS (
    DELETE FROM __SCHEMA__.events WHERE emitter_id = %(emitter_id)s RETURNING 1
)
SELECT count(*) FROM purged;
