"""One CTR run on the tiny sentiment stream, recorded once and shared by the tests."""

from dataclasses import dataclass, field

import pytest
import torch
from _helpers import experience_tensors, quiet_evaluator, task_logits
from _text_helpers import tiny_ctr_model

from avalanche_ctr.training import CTR


@dataclass
class CTRRun:
    strategy: CTR
    results: dict
    logits_after_own_task: list = field(default_factory=list)
    capsule_counts: list = field(default_factory=list)
    tsm_before_last: list = field(default_factory=list)
    cumulative_before_last: list = field(default_factory=list)


@pytest.fixture(scope="session")
def ctr_run(tokenizer, sentiment_stream) -> CTRRun:
    """CTR on the three sentiment tasks, with AdamW's decoupled weight decay so that the
    protection of earlier tasks must hold against an optimizer that moves every weight."""
    model = tiny_ctr_model(tokenizer)
    strategy = CTR(
        model=model,
        optimizer=torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.01),
        train_mb_size=16,
        train_epochs=12,
        eval_mb_size=64,
        evaluator=quiet_evaluator(),
    )
    run = CTRRun(strategy=strategy, results={})
    last = len(sentiment_stream.train_stream) - 1
    for i, experience in enumerate(sentiment_stream.train_stream):
        if i == last:
            run.tsm_before_last = [
                [p.detach().clone() for p in (q.tsm.fc1.weight, q.tsm.fc1.bias, q.tsm.fc2.weight)]
                for q in model.plugins
            ]
            run.cumulative_before_last = [
                [m.cumulative.clone() for _, m in q.named_masks] for q in model.plugins
            ]
        strategy.train(experience)
        run.capsule_counts.append(
            [(len(q.ksm.task_capsules.capsules), q.ksm.n_tasks) for q in model.plugins]
        )
        x, _ = experience_tensors(sentiment_stream.test_stream[i])
        run.logits_after_own_task.append(task_logits(model, x, i))
    run.results = strategy.eval(sentiment_stream.test_stream)
    return run
