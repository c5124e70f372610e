"""Errors of the command line that are the user's to fix: the message says how."""

__all__ = ["UsageError", "BenchmarkDataError"]


class UsageError(ValueError):
    """Input that cannot run: a wrong name, a strategy on the wrong modality, a setting
    out of range."""


class BenchmarkDataError(RuntimeError):
    """A benchmark's data could not be found; the message says how to get them."""
