"""chaosbus injector."""
