"""Shared code of every chaosbus service: CRD models, wire messages, subjects, bus, config, logging."""
