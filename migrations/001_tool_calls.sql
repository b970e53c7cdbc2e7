-- Execwall OR Gate: the Postgres sink's tables (sinks: [{type: postgres, table: tool_calls}]).
--
-- One row per `event: "request"` line of the JSONL spend log: the line's fields as
-- columns, the whole line as JSONB. request_id is the key, so a line written twice
-- (a retry after an outage, `python -m gate sink-backfill`) is stored once.
-- The gate applies this file itself when the table is missing (with the configured
-- table name in place of tool_calls); to create it by hand instead:
--     psql "$GATE_PG_DSN" -v ON_ERROR_STOP=1 -f migrations/001_tool_calls.sql

CREATE TABLE IF NOT EXISTS tool_calls (
    request_id        text PRIMARY KEY,
    ts                timestamptz NOT NULL,          -- when the request ended (UTC)
    event             text NOT NULL DEFAULT 'request',
    generation_id     text,                          -- OpenRouter's id, when it named one
    agent_id          text,
    model             text,                          -- the model that answered
    tier              text,
    models_allowed    text[] NOT NULL DEFAULT '{}',
    stream            boolean,
    status            integer,                       -- HTTP status the client got
    prompt_tokens     bigint,
    completion_tokens bigint,
    cost              numeric NOT NULL,              -- USD, exact
    cost_source       text,                          -- usage | generation | price_table | hold | none
    budget_remaining  numeric,
    latency_ms        double precision,
    line              jsonb NOT NULL,                -- the spend log line, every field
    inserted_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS tool_calls_ts_idx ON tool_calls (ts);
CREATE INDEX IF NOT EXISTS tool_calls_agent_ts_idx ON tool_calls (agent_id, ts);

-- How far each sink has copied each spend log: a byte offset just past the last line
-- committed. log_id is a digest of the log's first line, so a new (rotated) log starts
-- at 0 and a restarted gate goes on where it stopped. Moved in the same transaction
-- as the rows it covers.
CREATE TABLE IF NOT EXISTS gate_sink_cursor (
    sink_table   text NOT NULL,
    log_id       text NOT NULL,
    log_path     text NOT NULL,
    byte_offset  bigint NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sink_table, log_id)
);
