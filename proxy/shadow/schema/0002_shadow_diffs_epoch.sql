-- Samples are kept per route epoch (proxy/shadow/redis_counters.py): the report shows the current
-- epoch's examples. Rows written before epochs existed belong to no epoch ('').
ALTER TABLE strangler.shadow_diffs ADD COLUMN epoch text NOT NULL DEFAULT '';
CREATE INDEX shadow_diffs_route_epoch_idx ON strangler.shadow_diffs (route, epoch, created_at DESC);
