-- A stored sample names the request it came from (the gateway's X-Request-Id, as its access log and the
-- upstreams saw it), so an engineer can find that request in their logs. Rows written before carry ''.
ALTER TABLE strangler.shadow_diffs ADD COLUMN request_id text NOT NULL DEFAULT '';
