"""Exceptions with a meaning for the message edge, shared by pure cores and the bus."""


class RetryLater(Exception):
    """The message is fine but cannot be handled yet: redeliver it shortly, without alarm."""
