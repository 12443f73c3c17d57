-- webhooks_emitter PostgreSQL store: schema version 2 (from version 1).
-- Run by PostgresStore.migrate() inside one transaction, under an advisory lock.
--
-- The trace context an event was emitted in (a W3C traceparent, or None): kept so that a
-- delivery in another process continues the emitter's trace. Nullable and without a
-- default, so adding it rewrites nothing (a catalog change only) and the previous release,
-- which neither reads nor writes it, keeps working on these tables during a rolling
-- deploy (compatible_from stays 1). append_event(), which that release calls, is kept for
-- the same reason; this release inserts with a prepared statement instead.
ALTER TABLE __SCHEMA__.events ADD COLUMN trace_context text;
