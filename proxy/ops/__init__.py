"""The process: start-up, workers, reloads, the admin port, metrics, logs, settings."""
