"""chaosbus watcher."""
