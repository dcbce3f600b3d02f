"""Shadow comparison: admission, replay to the other side, judging, noise, redaction, dry runs, storage."""
