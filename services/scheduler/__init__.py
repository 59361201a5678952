"""chaosbus scheduler."""
