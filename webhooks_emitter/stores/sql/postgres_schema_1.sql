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
