-- webhooks_emitter PostgreSQL store: schema version 1 (from nothing).
-- Run by PostgresStore.migrate() inside one transaction, under an advisory lock;
-- __SCHEMA__ stands for the quoted schema name. The store never holds a secret: events
-- (name, delivery id, body) and delivery state only.

CREATE TABLE __SCHEMA__.schema_version (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- the version of these tables
    version integer NOT NULL,
    -- the oldest library schema version that can still use them (rolling deploys)
    compatible_from integer NOT NULL,
    upgraded_at timestamptz NOT NULL DEFAULT now()
);

CREATE SEQUENCE __SCHEMA__.events_seq AS bigint;

-- One row per event and emitter. Queued rows have failed_at NULL; delivered rows are
-- deleted; given-up rows (dead letters) have failed_at set.
--
-- A queue table: rows come and go, few stay. Dead rows are reclaimed by autovacuum after a
-- fixed number of them (scale factor 0: not a fraction of a table that is mostly empty),
-- at full speed (cost delay 0: the table is small), so its size levels off under sustained
-- load instead of growing. fillfactor leaves room on each page for the updates of a try
-- (attempts, next_at, error: columns no index holds) to stay on the page (HOT updates).
CREATE TABLE __SCHEMA__.events (
    seq bigint PRIMARY KEY DEFAULT nextval('__SCHEMA__.events_seq'),
    emitter_id text NOT NULL,
    event text NOT NULL,
    request_id text NOT NULL,
    body bytea NOT NULL,
    ordering_key text,
    attempts integer NOT NULL DEFAULT 0,
    next_at double precision NOT NULL DEFAULT 0,
    emitted_at double precision NOT NULL,
    status_code integer,
    error text,
    failed_at double precision
) WITH (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_analyze_scale_factor = 0.0,
    autovacuum_analyze_threshold = 5000,
    toast.autovacuum_vacuum_scale_factor = 0.0,
    toast.autovacuum_vacuum_threshold = 1000,
    toast.autovacuum_vacuum_cost_delay = 0
);

ALTER SEQUENCE __SCHEMA__.events_seq OWNED BY __SCHEMA__.events.seq;

-- An emitter's queued events in emit order: fetch, counts, max_queue_size, and the loose
-- index scan of poll() (the emitters with queued events, without reading their events).
CREATE INDEX events_queued ON __SCHEMA__.events (emitter_id, seq) WHERE failed_at IS NULL;
-- Dead letters, per emitter in emit order. Queued rows are not in it (partial index), so
-- the hot path of insert, try and delete never touches it.
CREATE INDEX events_failed ON __SCHEMA__.events (emitter_id, seq) WHERE failed_at IS NOT NULL;

-- One row per emitter id: its shared state and its lease. Updated at every try
-- (last_try_at), never by emit, so no emit waits on it.
CREATE TABLE __SCHEMA__.emitters (
    emitter_id text PRIMARY KEY,
    paused boolean NOT NULL DEFAULT false,
    hold_until double precision NOT NULL DEFAULT 0,
    last_try_at double precision NOT NULL DEFAULT 0,
    failing_since double precision,
    next_due double precision NOT NULL DEFAULT 0,
    -- "host:pid" and random token of the lease; it is held while lease_expires (the
    -- server's clock) is in the future. A released lease keeps its token (outcomes of a
    -- try that ended after the release are still recorded) with lease_expires NULL.
    lease_holder text,
    lease_token text,
    lease_expires timestamptz
) WITH (
    fillfactor = 70,
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 500,
    autovacuum_vacuum_cost_delay = 0
);

-- poll(): the paused emitters, without reading every emitter.
CREATE INDEX emitters_paused ON __SCHEMA__.emitters (emitter_id) WHERE paused;

-- append(): one event for each target that has room, then one notification (delivered at
-- commit, never after a rollback). A function, so that callers whose driver never
-- prepares statements (psycopg2, SQLAlchemy) do not plan its statements at every emit:
-- PL/pgSQL keeps their plans for the session. The room check takes no lock, so emits never
-- wait for each other; two emits racing for an emitter's last place may both take it
-- (max_queue_size is exceeded by at most the number of concurrent emits). It costs two
-- index probes while a queue is surely short (its seq range is below max_size), and
-- counts the queue (up to max_size index entries) only when it may be full.
CREATE FUNCTION __SCHEMA__.append_event(
    emitter_ids text[],
    max_sizes bigint[],
    event_name text,
    event_request_id text,
    event_body bytea,
    event_ordering_key text,
    event_emitted_at double precision,
    channel text
) RETURNS text[]
LANGUAGE plpgsql
AS $body$
DECLARE
    stored text[] := '{}';
    target_id text;
    max_size bigint;
    lowest bigint;
    highest bigint;
    queued bigint;
BEGIN
    FOR i IN 1 .. coalesce(array_length(emitter_ids, 1), 0) LOOP
        target_id := emitter_ids[i];
        max_size := max_sizes[i];
        CONTINUE WHEN max_size < 1;
        -- Two probes of the index (ORDER BY ... LIMIT 1 rather than min() and max(), which
        -- the planner may answer by reading the whole queue).
        lowest := (SELECT e.seq FROM __SCHEMA__.events e
                   WHERE e.emitter_id = target_id AND e.failed_at IS NULL
                   ORDER BY e.emitter_id, e.seq LIMIT 1);
        highest := (SELECT e.seq FROM __SCHEMA__.events e
                    WHERE e.emitter_id = target_id AND e.failed_at IS NULL
                    ORDER BY e.emitter_id DESC, e.seq DESC LIMIT 1);
        IF highest - lowest + 1 >= max_size THEN
            SELECT count(*) INTO queued FROM (
                SELECT 1 FROM __SCHEMA__.events e
                WHERE e.emitter_id = target_id AND e.failed_at IS NULL
                LIMIT max_size
            ) AS queue;
            CONTINUE WHEN queued >= max_size;
        END IF;
        INSERT INTO __SCHEMA__.events
            (emitter_id, event, request_id, body, ordering_key, emitted_at)
        VALUES (target_id, event_name, event_request_id, event_body, event_ordering_key,
                event_emitted_at);
        stored := stored || target_id;
    END LOOP;
    IF cardinality(stored) > 0 THEN
        PERFORM pg_notify(channel, '');
    END IF;
    RETURN stored;
END
$body$;
