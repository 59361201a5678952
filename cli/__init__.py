"""chaosbus cli."""
