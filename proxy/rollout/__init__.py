"""The migration autopilot (issue 12): rollout stages in Redis, one leader, gates, rollbacks, audit, CLI."""
