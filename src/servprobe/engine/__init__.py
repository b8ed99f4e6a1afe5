"""Sans-IO version detection: probe planning and the per-service state machine."""
