-- webhooks_emitter SQLite store: schema version 2 (from 1). Compatible from 1: it only adds
-- an index, so code of version 1 goes on working with it.

-- replay(emitter_id, request_ids) picks its events without reading every failed one. Only
-- failed rows are in it, so emitting and delivering never write to it.
CREATE INDEX events_failed_by_request ON events (emitter_id, request_id)
    WHERE state = 'failed';
