"""chaosbus recorder."""
