"""Errors of the command line that are the user's to fix: the message says how
(defined in :mod:`avalanche_ctr.errors`, where the library's modules can raise them too)."""

from avalanche_ctr.errors import BenchmarkDataError, DataFileError, UsageError

__all__ = ["UsageError", "BenchmarkDataError", "DataFileError"]
