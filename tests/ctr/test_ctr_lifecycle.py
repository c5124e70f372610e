"""A NaN in a later task's inputs stops CTR with a clear error before any weight
changes, and the finished task keeps its outputs."""

import pytest
import torch
from _helpers import NaNAt, assert_state_unchanged, experience_tensors, quiet_evaluator, task_logits
from _text_helpers import tiny_ctr_model

from avalanche_ctr.finite import NonFiniteError
from avalanche_ctr.training import CTR


def test_a_nan_in_task_1_stops_training_and_task_0_keeps_its_outputs(tokenizer, sentiment_stream):
    model = tiny_ctr_model(tokenizer)
    # token ids cannot hold a NaN: it goes into the embeddings of one text instead
    nan = NaNAt(experience=1, epoch=1, iteration=3, module=model.encoder.embeddings)
    strategy = CTR(
        model=model,
        optimizer=torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.01),
        train_mb_size=16,
        train_epochs=2,
        eval_mb_size=64,
        plugins=[nan],
        evaluator=quiet_evaluator(),
    )
    x, _ = experience_tensors(sentiment_stream.test_stream[0])
    strategy.train(sentiment_stream.train_stream[0])
    before = task_logits(model, x, 0)
    message = (
        r"the loss is nan and the gradients of \d+ parameters are not finite \(encoder\..*\) in "
        r"training experience 1 \(task 1\), epoch 1, iteration 3 \(counted from 0\); training "
        r"stopped before the optimizer step, so no weight changed in this step and every "
        r"finished task is as it was\. Look for NaN or infinite values in this experience's "
        r"inputs, or lower the learning rate$"
    )
    with pytest.raises(NonFiniteError, match=message):
        strategy.train(sentiment_stream.train_stream[1])
    assert_state_unchanged(nan.state, model)
    assert torch.equal(task_logits(model, x, 0), before)
