"""The comparison behind ``avalanche-ctr compare`` / ``run``: benchmarks and strategies
the command line knows, the runner that trains and measures them, and the report.

A new strategy registers in one place: ``register(StrategyRecord(...))``
(:mod:`avalanche_ctr.experiments.strategies`).
"""

from avalanche_ctr.experiments.benchmarks import BENCHMARKS, BenchmarkSpec
from avalanche_ctr.experiments.errors import BenchmarkDataError, UsageError
from avalanche_ctr.experiments.runner import Settings, compare, run_one
from avalanche_ctr.experiments.strategies import (
    STRATEGIES,
    Option,
    StrategyContext,
    StrategyRecord,
    register,
    unregister,
)

__all__ = [
    "BENCHMARKS",
    "STRATEGIES",
    "BenchmarkDataError",
    "BenchmarkSpec",
    "Option",
    "Settings",
    "StrategyContext",
    "StrategyRecord",
    "UsageError",
    "compare",
    "register",
    "run_one",
    "unregister",
]
