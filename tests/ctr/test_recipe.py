"""CTR's training recipe (mask-embedding learning rate and initial mean, warm-up
schedule) and the pairing of CTR with its ablation without KSM (same random numbers
outside the KSM)."""

import pytest
import torch
from _helpers import quiet_evaluator
from _text_helpers import tiny_bert
from avalanche.core import SupervisedPlugin

from avalanche_ctr.ctr import HATMask, warmup_linear
from avalanche_ctr.models import CTRModel
from avalanche_ctr.training import CTR


def test_warmup_linear_rises_then_falls_to_zero():
    assert warmup_linear(0.0, 0.1) == 0.0
    assert warmup_linear(0.05, 0.1) == pytest.approx(0.5)
    assert warmup_linear(0.1, 0.1) == pytest.approx(1.0)
    assert warmup_linear(0.55, 0.1) == pytest.approx(0.5)
    assert warmup_linear(1.0, 0.1) == 0.0
    assert warmup_linear(0.3, 0.0) == pytest.approx(0.7)


class Record(SupervisedPlugin):
    """Each training iteration's learning rates, targets and HAT scale."""

    def __init__(self) -> None:
        super().__init__()
        self.lrs, self.targets, self.groups = [], [], []

    def before_forward(self, strategy, **kwargs) -> None:
        self.optimizer = strategy.optimizer
        self.lrs.append([group["lr"] for group in strategy.optimizer.param_groups])
        self.groups.append([len(group["params"]) for group in strategy.optimizer.param_groups])
        self.targets.append(strategy.mb_y.clone())


def train(tokenizer, stream, *, knowledge_sharing=True, n_tasks=2, model_options=None, **kwargs):
    torch.manual_seed(3)
    model = CTRModel(
        tiny_bert(tokenizer),
        bottleneck=32,
        capsule_hidden=8,
        routing_channels=8,
        knowledge_sharing=knowledge_sharing,
        **(model_options or {}),
    )
    record = Record()
    strategy = CTR(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        train_mb_size=32,
        train_epochs=2,
        plugins=[record],
        evaluator=quiet_evaluator(),
        **kwargs,
    )
    for experience in stream.train_stream[:n_tasks]:
        strategy.train(experience)
    return model, record


def test_mask_embeddings_get_their_own_rate_and_every_task_warms_up_from_it(
    tokenizer, sentiment_stream
):
    model, record = train(tokenizer, sentiment_stream, n_tasks=2, hat_lr=0.1, warmup=0.25)
    n_masks = len(model.masks())
    assert all(groups[1] == n_masks for groups in record.groups)  # one embedding per mask
    assert len(record.lrs) == 16  # 2 tasks of 2 epochs of 4 mini-batches
    factors = [warmup_linear(i / 8, 0.25) for i in range(8)] * 2
    for (base, own), factor in zip(record.lrs, factors, strict=True):
        assert base == pytest.approx(0.01 * factor) and own == pytest.approx(0.1 * factor)
    strategy_lrs = [group["lr"] for group in record.optimizer.param_groups]
    assert strategy_lrs == [0.01, 0.1]  # put back after the experience


def test_mask_embeddings_start_at_the_chosen_mean_and_tasks_then_claim_less(
    tokenizer, sentiment_stream
):
    torch.manual_seed(0)
    hat = HATMask(4000).add_task()
    torch.manual_seed(0)
    shifted = HATMask(4000, init_mean=-1.0).add_task()
    assert torch.allclose(shifted, hat - 1.0)  # the same draws, moved: pairs stay paired
    assert (shifted > 0).float().mean() == pytest.approx(0.159, abs=0.02)  # Phi(-1)
    free = {}
    for mean in (0.0, -1.5):
        model, _ = train(
            tokenizer, sentiment_stream, model_options={"mask_init_mean": mean}, hat_lr=0.05
        )
        cumulative = torch.cat([m.cumulative for m in model.masks()])
        free[mean] = float((cumulative == 0).float().mean())
    assert free[0.0] < 0.4 < 0.7 < free[-1.5]  # about (1 - p)^2 after 2 tasks


def test_bad_recipe_values_are_refused(tokenizer):
    model = CTRModel(tiny_bert(tokenizer), bottleneck=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    with pytest.raises(ValueError, match="hat_lr must be a positive"):
        CTR(model=model, optimizer=optimizer, hat_lr=0.0)
    with pytest.raises(ValueError, match=r"warmup must be a fraction in \[0, 1\)"):
        CTR(model=model, optimizer=optimizer, warmup=1.0)
    with pytest.raises(ValueError, match="mask_init_mean must be a finite number"):
        CTRModel(tiny_bert(tokenizer), bottleneck=8, mask_init_mean=float("nan"))


def test_ctr_and_its_ablation_draw_the_same_random_numbers_outside_the_ksm(
    tokenizer, sentiment_stream
):
    """Same seed: the TSMs start equal, every task's mask embeddings start equal and the
    mini-batches come in the same order, although CTR initialises capsules and routing
    and draws Gumbel noise for its gates."""
    torch.manual_seed(5)
    with_ksm = CTRModel(tiny_bert(tokenizer), bottleneck=16, knowledge_sharing=True)
    torch.manual_seed(5)
    without = CTRModel(tiny_bert(tokenizer), bottleneck=16, knowledge_sharing=False)
    for a, b in zip(with_ksm.plugins, without.plugins, strict=True):
        assert torch.equal(a.tsm.fc1.weight, b.tsm.fc1.weight)
    ctr, ctr_record = train(tokenizer, sentiment_stream, knowledge_sharing=True)
    ablation, ablation_record = train(tokenizer, sentiment_stream, knowledge_sharing=False)
    assert len(ctr_record.targets) == len(ablation_record.targets) == 16  # 2 tasks x 8
    for a, b in zip(ctr_record.targets, ablation_record.targets, strict=True):
        assert torch.equal(a, b)
    assert ctr.ksm_seed == ablation.ksm_seed  # torch.initial_seed() when built
    ctr_again, _ = train(tokenizer, sentiment_stream, knowledge_sharing=True)
    for (name, value), again in zip(
        ctr.state_dict().items(), ctr_again.state_dict().values(), strict=True
    ):
        assert torch.equal(value, again), name  # the KSM's own stream is seeded too
