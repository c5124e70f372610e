"""``benchmarks/ctr_step_time.py``'s paired rounds and phase split, at toy size: each
round times both systems, and an iteration's phases are the iteration's time, split."""

from argparse import Namespace

import pytest
from _helpers import load_benchmark


@pytest.fixture(scope="module")
def step_time():
    return load_benchmark("ctr_step_time")


def test_rounds_pair_both_systems_and_phases_split_each_iteration(step_time, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = Namespace(seed=0, batch=2, rounds=2)
    stream = step_time.random_stream(2, [2, 6], 4, 2000, seed=0)
    rounds, phases = step_time.paired_step_times(stream, {2}, args)
    assert list(rounds) == list(phases) == [2]
    assert len(rounds[2]) == len(phases[2]) == 2
    assert all(ctr > 0 and ablation > 0 for ctr, ablation in rounds[2])
    for split in phases[2]:
        for system in split:
            assert set(system) == set(step_time.PHASES)
            assert system["forward"] > 0 and system["backward"] > 0 and system["update"] > 0
            assert system["rest"] >= 0


def test_phases_add_up_to_the_iteration(step_time, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = Namespace(seed=0, batch=2)
    strategy, timer = step_time.timed_strategy(False, args)
    strategy.train(next(iter(step_time.random_stream(1, 6, 4, 2000, seed=0).train_stream)))
    phase_timer = strategy.plugins[0]
    assert isinstance(phase_timer, step_time.PhaseTimer)
    for phases, total in zip(phase_timer.times[-1], timer.times[-1], strict=True):
        # the two timers' spans differ only by the callbacks between them
        assert sum(phases.values()) == pytest.approx(total, abs=2e-3)
