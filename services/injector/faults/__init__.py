"""Fault kinds: one module each, registered by fault tag."""
