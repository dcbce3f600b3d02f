-- The gateway's own tables, in a schema of their own: applied by the gateway when it opens its diff
-- store (or by `strangler migrate --gateway`), recorded in strangler.schema_migrations. They never touch
-- the application's tables. Differing shadow-comparison samples (proxy/shadow/pg_samples.py), redacted
-- before they are written; slots per route and signature are decided by the writer, and rows older than
-- the retention period are deleted by it.

CREATE SCHEMA IF NOT EXISTS strangler;

CREATE TABLE strangler.shadow_diffs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    route            text NOT NULL,
    signature        text NOT NULL,            -- sorted, space-separated normalised differing paths
    method           text NOT NULL,
    path             text NOT NULL,            -- path and query as forwarded, query redacted
    primary_side     text NOT NULL,            -- which upstream served the client: legacy or new
    control_status   integer,                  -- legacy; NULL when it failed (see control_error)
    candidate_status integer,                  -- new
    control_error    text,
    candidate_error  text,
    diff             jsonb NOT NULL,           -- [{"path","kind","control","candidate"}, ...]
    control_body     text NOT NULL DEFAULT '', -- truncated, redacted
    candidate_body   text NOT NULL DEFAULT '',
    control_ms       double precision,
    candidate_ms     double precision,
    created_at       timestamptz(3) NOT NULL DEFAULT now()
);
CREATE INDEX shadow_diffs_route_sig_idx ON strangler.shadow_diffs (route, signature, created_at DESC);
CREATE INDEX shadow_diffs_created_at_idx ON strangler.shadow_diffs (created_at);
