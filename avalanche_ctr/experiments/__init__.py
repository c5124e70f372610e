"""The comparison behind ``avalanche-ctr compare`` / ``run``: benchmarks and strategies
the command line knows, the runner that trains and measures them, and the report.
"""

from avalanche_ctr.experiments.benchmarks import BENCHMARKS, BenchmarkSpec
from avalanche_ctr.experiments.errors import BenchmarkDataError, UsageError
from avalanche_ctr.experiments.runner import Settings, compare, run_one
from avalanche_ctr.experiments.strategies import STRATEGIES, StrategySpec

__all__ = [
    "BENCHMARKS",
    "STRATEGIES",
    "BenchmarkDataError",
    "BenchmarkSpec",
    "Settings",
    "StrategySpec",
    "UsageError",
    "compare",
    "run_one",
]
