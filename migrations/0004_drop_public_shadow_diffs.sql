-- The gateway's diff samples moved out of the application's schema: the gateway now creates and
-- migrates its own table, strangler.shadow_diffs (proxy/shadow/schema/), when it opens its store.
-- The copy 0002 made in the application's schema is dropped (forward-only: 0002 stays as it was).
-- Its rows were short-lived samples (7-day retention), not data to keep.

DROP TABLE IF EXISTS shadow_diffs;
