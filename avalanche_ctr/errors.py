"""Errors that are the user's to fix: each message names the value or file at fault and
says what to do instead.

They live in this dependency-free module so that the library's own modules (the text
benchmarks' file readers, for one) raise the same types as the command line
(:mod:`avalanche_ctr.experiments.errors` re-exports them); ``avalanche-ctr`` turns each into
one ``avalanche-ctr: error:`` line.
"""

__all__ = ["UsageError", "BenchmarkDataError", "DataFileError"]


class UsageError(ValueError):
    """Input that cannot run: a wrong name, a strategy on the wrong modality, a setting
    out of range."""


class BenchmarkDataError(RuntimeError):
    """A benchmark's data could not be found or read; the message says how to get them."""


class DataFileError(BenchmarkDataError, ValueError):
    """A benchmark's data file exists but cannot be used: malformed, empty, not UTF-8, or
    a task whose training split lacks one of its classes. The message names the file (and
    line) or the task and the class. A ``ValueError`` too, as the readers raised before."""
