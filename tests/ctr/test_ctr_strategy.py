import copy

import pytest
import torch
from _helpers import experience_tensors, quiet_evaluator, task_logits
from _text_helpers import tiny_ctr_model

from avalanche_ctr.benchmarks import text_benchmark
from avalanche_ctr.training import CTR


def accuracies(results: dict) -> list[float]:
    return [v for k, v in sorted(results.items()) if k.startswith("Top1_Acc_Exp/eval_phase")]


def test_ctr_learns_a_small_text_stream_well_above_chance(ctr_run):
    acc = accuracies(ctr_run.results)
    assert len(acc) == 3
    assert sum(acc) / 3 >= 0.75, acc  # chance is 0.5
    assert min(acc) >= 0.7, acc


def test_earlier_tasks_outputs_are_unchanged_after_later_tasks(ctr_run, sentiment_stream):
    model = ctr_run.strategy.model
    for task, logits in enumerate(ctr_run.logits_after_own_task):
        x, _ = experience_tensors(sentiment_stream.test_stream[task])
        assert torch.equal(task_logits(model, x, task), logits)  # bit-identical on the CPU


def test_one_capsule_and_source_routing_more_per_task(ctr_run):
    for n_tasks, counts in enumerate(ctr_run.capsule_counts, start=1):
        assert counts == [(n_tasks, n_tasks)] * 4  # 2 layers x 2 plugins
    for plugin in ctr_run.strategy.model.plugins:
        assert [len(m.embeddings) for _, m in plugin.named_masks] == [3] * 5


def test_transfer_gates_of_a_task_are_zero_for_later_tasks(ctr_run, sentiment_stream):
    model = ctr_run.strategy.model
    for task in range(3):
        x, _ = experience_tensors(sentiment_stream.test_stream[task])
        task_logits(model, x, task)
        for gates in model.transfer_gates():
            assert gates.shape == (x.shape[0], 3)
            assert set(gates.unique().tolist()) <= {0.0, 1.0}
            assert (gates[:, task + 1 :] == 0).all()


def test_routing_of_a_sample_does_not_depend_on_the_rest_of_the_batch(ctr_run, sentiment_stream):
    model = ctr_run.strategy.model
    x, _ = experience_tensors(sentiment_stream.test_stream[2])
    batch_logits = task_logits(model, x, 2)
    batch_gates = [g[:1] for g in model.transfer_gates()]
    alone_logits = task_logits(model, x[:1], 2)
    assert torch.allclose(alone_logits, batch_logits[:1], atol=1e-5)
    for alone, in_batch in zip(model.transfer_gates(), batch_gates, strict=True):
        assert torch.equal(alone, in_batch)


def test_units_in_the_cumulative_mask_receive_no_update(ctr_run):
    model = ctr_run.strategy.model
    changed_free = 0
    for plugin, before, (cum1, cum2, *_) in zip(
        model.plugins, ctr_run.tsm_before_last, ctr_run.cumulative_before_last, strict=True
    ):
        w1, b1, w2 = before
        used1, used2 = cum1 > 0, cum2 > 0
        assert used1.any() and used2.any()
        assert torch.equal(plugin.tsm.fc1.weight[used1], w1[used1])
        assert torch.equal(plugin.tsm.fc1.bias[used1], b1[used1])
        both = used2[:, None] & used1[None, :]
        assert torch.equal(plugin.tsm.fc2.weight[both], w2[both])
        changed_free += int((plugin.tsm.fc1.weight[~used1] != w1[~used1]).sum())
    assert changed_free > 0  # the free units did learn


def test_masks_are_sparse_after_training(ctr_run):
    for plugin in ctr_run.strategy.model.plugins:
        for _, mask in plugin.named_masks:
            assert set(mask.cumulative.unique().tolist()) <= {0.0, 1.0}
            assert mask.used(0).float().mean() < 0.9


def test_a_repeated_task_label_with_more_classes_is_refused(tokenizer):
    first = text_benchmark(
        [(["good book", "bad book"] * 4, [1, 0] * 4)],
        [(["good book", "bad book"], [1, 0])],
        tokenizer=tokenizer,
        max_length=8,
    )
    texts = (["good book", "bad book", "a book"] * 4, [1, 0, 2] * 4)
    second = text_benchmark([texts], [texts], tokenizer=tokenizer, max_length=8)
    model = tiny_ctr_model(tokenizer)
    strategy = CTR(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        train_mb_size=4,
        evaluator=quiet_evaluator(),
    )
    strategy.train(first.train_stream[0])
    x, _ = experience_tensors(first.test_stream[0])
    before = task_logits(model, x, 0)
    with pytest.raises(ValueError, match="repeats task 0 with classes up to 2.*head of 2"):
        strategy.train(second.train_stream[0])  # task label 0 again, with a third class
    assert torch.equal(task_logits(model, x, 0), before)
    with pytest.raises(ValueError, match="task 5 was never trained"):
        task_logits(model, x, 5)


def test_ctr_refuses_other_models_and_bad_inputs(tokenizer):
    with pytest.raises(TypeError, match="CTRModel"):
        CTR(model=torch.nn.Linear(2, 2), optimizer=torch.optim.SGD([torch.zeros(1)], lr=0.1))
    model = tiny_ctr_model(tokenizer)
    model.start_task(0)
    with pytest.raises(ValueError, match=r"\(batch, 3, length\)"):
        model(torch.zeros(2, 8, dtype=torch.long), 0)


def test_ctr_without_knowledge_sharing_is_adapters_with_hat_masks(tokenizer, sentiment_stream):
    from _text_helpers import tiny_bert

    from avalanche_ctr.models import CTRModel

    model = CTRModel(tiny_bert(tokenizer), bottleneck=32, knowledge_sharing=False)
    strategy = CTR(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        train_mb_size=16,
        train_epochs=4,
        evaluator=quiet_evaluator(),
    )
    x, _ = experience_tensors(sentiment_stream.test_stream[0])
    for i, experience in enumerate(sentiment_stream.train_stream[:2]):
        strategy.train(experience)
        if i == 0:
            first = task_logits(model, x, 0)
    assert all(p.ksm is None for p in model.plugins)
    assert model.transfer_gates() == []
    assert torch.equal(task_logits(model, x, 0), first)  # bit-identical on the CPU


def test_a_later_task_reads_what_earlier_tasks_learned_through_the_shared_ksm(
    ctr_run, sentiment_stream
):
    """The transfer channel: task 2's routing reads task 0's frozen capsule, so task 2's
    outputs depend on it, while task 0's outputs depend on nothing task 2 owns."""
    model = copy.deepcopy(ctr_run.strategy.model)
    x2, _ = experience_tensors(sentiment_stream.test_stream[2])
    x0, _ = experience_tensors(sentiment_stream.test_stream[0])
    earlier = task_logits(model, x0, 0)
    task_logits(model, x2, 2)
    gates = torch.cat([g[:, 0] for g in model.transfer_gates()])
    assert gates.sum() > 0  # some samples route task 0's capsule
    with torch.no_grad():
        for plugin in model.plugins:
            for param in plugin.ksm.task_capsules.capsules[2].parameters():
                param.add_(torch.randn_like(param))
            plugin.ksm.gates[2].weight.normal_()
    assert torch.equal(task_logits(model, x0, 0), earlier)
    later = task_logits(model, x2, 2)
    with torch.no_grad():
        for plugin in model.plugins:
            for param in plugin.ksm.task_capsules.capsules[0].parameters():
                param.add_(torch.randn_like(param))
    assert not torch.allclose(task_logits(model, x2, 2), later)
