"""The migration autopilot's shared state (issue 12): rollout stages and their audit events in Redis, the
leader's lease, served-traffic counts, and the pure promote / hold / rollback decision. The report reads
it; ``proxy.autopilot`` (a layer above the report) gathers the evidence and runs the controller."""
