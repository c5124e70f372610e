"""The official code's plastic KSM and its sample mixing (issue 25)."""

import pytest
import torch
from _helpers import experience_tensors, quiet_evaluator, task_logits
from _text_helpers import tiny_bert

from avalanche_ctr.ctr import KnowledgeSharingModule
from avalanche_ctr.models import CTRModel
from avalanche_ctr.training import CTR


def tiny(tokenizer, **kwargs) -> CTRModel:
    return CTRModel(
        tiny_bert(tokenizer, dropout=0.0),
        bottleneck=16,
        capsule_hidden=8,
        routing_channels=4,
        **kwargs,
    )


def ksm_weights(model: CTRModel) -> dict[str, torch.Tensor]:
    return {
        name: p.detach().clone()
        for name, p in model.named_parameters()
        if ".ksm." in name and "mask_" not in name
    }


def train_two_tasks(model, stream):
    strategy = CTR(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        train_mb_size=32,
        train_epochs=1,
        evaluator=quiet_evaluator(),
    )
    strategy.train(stream.train_stream[0])
    after_first = ksm_weights(model)
    x, _ = experience_tensors(stream.test_stream[0])
    logits_first = task_logits(model, x, 0)
    strategy.train(stream.train_stream[1])
    return after_first, ksm_weights(model), torch.equal(task_logits(model, x, 0), logits_first)


def moved(before, after, part: str) -> set[str]:
    return {n for n in before if part in n and not torch.equal(before[n], after[n])}


def test_official_ksm_retrains_earlier_capsules_and_protected_one_does_not(
    tokenizer, sentiment_stream
):
    torch.manual_seed(0)
    official = tiny(tokenizer, ksm="official", n_tasks=3)
    before, after, unchanged = train_two_tasks(official, sentiment_stream)
    first_capsules = moved(before, after, "task_capsules.capsules.0.")
    assert len(first_capsules) == 4 * 4  # fc1, fc2 weight and bias in each of 4 plugins
    assert len(moved(before, after, "route_weights.0")) == 4
    assert len(moved(before, after, "project.bias")) == 4  # the shared projection, unprotected
    assert not moved(before, after, "task_capsules.capsules.2.")  # a later task's: untouched
    assert not unchanged  # so the first task's outputs change: forgetting is possible

    torch.manual_seed(0)
    protected = tiny(tokenizer)
    before, after, unchanged = train_two_tasks(protected, sentiment_stream)
    assert not moved(before, after, "task_capsules.capsules.0.")
    assert not moved(before, after, "route_weights.0")
    assert unchanged


def test_official_ksm_refuses_more_tasks_than_it_allocated(tokenizer, sentiment_stream):
    model = tiny(tokenizer, ksm="official", n_tasks=1)
    model.start_task(0)
    model.finish_task()
    with pytest.raises(ValueError, match="built for n_tasks=1 .* build it with n_tasks"):
        model.start_task(1)
    with pytest.raises(ValueError, match="give n_tasks"):
        tiny(tokenizer, ksm="official")
    with pytest.raises(ValueError, match="belong to ksm='official'"):
        tiny(tokenizer, official_batch_mixing=True)


def mixing_ksm(batch_mixing: bool) -> KnowledgeSharingModule:
    torch.manual_seed(0)
    module = KnowledgeSharingModule(
        16,
        capsule_hidden=8,
        capsule_dim=3,
        n_transfer=3,
        channels=4,
        zero_projection=False,
        official=True,
        n_tasks=3,
        batch_mixing=batch_mixing,
    )
    for _ in range(2):
        module.add_task()
    with torch.no_grad():
        module.gate.bias.copy_(torch.tensor([5.0, -5.0]))  # every source on at evaluation
        module.mask_project.embeddings[1].fill_(1.0)
    return module.eval()


@pytest.mark.parametrize("batch_mixing", [False, True])
def test_official_mixing_makes_a_sample_depend_on_its_batch_neighbours(batch_mixing):
    module = mixing_ksm(batch_mixing)
    h = torch.randn(6, 5, 16)
    others = h.clone()
    others[1:] = torch.randn(5, 5, 16)  # same first sample, other neighbours
    with torch.no_grad():
        in_batch, _ = module(h, None, 1, None)
        with_others, _ = module(others, None, 1, None)
        alone, _ = module(h[:1], None, 1, None)
    same = torch.allclose(in_batch[0], with_others[0], atol=1e-6)
    assert same == (not batch_mixing)
    assert torch.allclose(in_batch[0], alone[0], atol=1e-6) == (not batch_mixing)


def test_official_mixing_changes_logits_with_the_batch(tokenizer, sentiment_stream):
    x, _ = experience_tensors(sentiment_stream.test_stream[0])
    differences = []
    for mixing in (False, True):
        torch.manual_seed(0)
        model = tiny(
            tokenizer,
            ksm="official",
            n_tasks=3,
            ksm_init="random",
            official_batch_mixing=mixing,
        )
        model.start_task(0)
        model.finish_task()
        with torch.no_grad():
            for plugin in model.plugins:  # weights that are not near their small start
                for param in (*plugin.tsm.parameters(), *plugin.ksm.parameters()):
                    param.normal_()
                plugin.ksm.gate.bias.copy_(torch.tensor([10.0, -10.0]))  # every source on
        model.classifier.adaptation(sentiment_stream.train_stream[0])
        batch = task_logits(model, x[:8], 0)
        shuffled = task_logits(model, torch.cat([x[:1], x[8:15]]), 0)
        differences.append((batch[0] - shuffled[0]).abs().max().item())
    assert differences[0] < 1e-5
    assert differences[1] > 1e-3


def test_train_layernorm_opens_the_encoders_layernorms_only_while_a_task_trains(tokenizer):
    def layernorms(model):
        return [p for n, p in model.encoder.named_parameters() if "LayerNorm" in n]

    for train in (False, True):
        model = tiny(tokenizer, train_layernorm=train)
        model.start_task(0)
        model.set_trainable()
        assert layernorms(model) and all(p.requires_grad == train for p in layernorms(model))
        assert not any(
            p.requires_grad
            for n, p in model.encoder.named_parameters()
            if "LayerNorm" not in n and ".plugin." not in n
        )
        model.finish_task()
        assert not any(p.requires_grad for p in layernorms(model))
