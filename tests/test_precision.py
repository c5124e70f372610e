"""Mixed precision keeps what the methods keep exact: old tasks' outputs and frozen
entries, under bf16 autocast on the CPU; fp16 skips an overflowing step and scales the
loss after every plugin has added its terms."""

import json

import pytest
import torch
from _helpers import experience_tensors, quiet_evaluator
from _text_helpers import tiny_ctr_model
from avalanche.core import SupervisedPlugin
from avalanche.models import MTSimpleMLP
from avalanche.training import Naive
from avalanche.training.plugins import EWCPlugin

from avalanche_ctr.benchmarks import SplitDigits
from avalanche_ctr.experiments.errors import UsageError
from avalanche_ctr.precision import MixedPrecision, autocast_dtype
from avalanche_ctr.training import CTR, ExSSNeT


@torch.no_grad()
def bf16_logits(model, x, task):
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return model(x, task).float()


def test_exssnet_in_bf16_keeps_old_tasks_and_learns():
    benchmark = SplitDigits(5, seed=0)
    model = MTSimpleMLP(input_size=64, hidden_size=64)
    strategy = ExSSNeT(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        density=0.2,
        mask_epochs=2,
        weight_epochs=2,
        train_mb_size=32,
        eval_mb_size=512,
        evaluator=quiet_evaluator(),
        plugins=[MixedPrecision("bf16")],
    )
    net = strategy.model
    x0, _ = experience_tensors(benchmark.test_stream[0])
    strategy.train(benchmark.train_stream[0])
    logits = bf16_logits(net, x0, 0)
    used = [layer.weight.detach().clone() for layer in net.supermask_layers]
    masks = [m.clone() for m in net.task_masks(0)]
    for experience in benchmark.train_stream[1:3]:
        strategy.train(experience)
    assert torch.equal(bf16_logits(net, x0, 0), logits)
    for before, layer, mask in zip(used, net.supermask_layers, masks, strict=True):
        assert torch.equal(layer.weight.detach()[mask], before[mask])
    assert all(layer.weight.dtype == torch.float32 for layer in net.supermask_layers)
    results = strategy.eval(benchmark.test_stream[:3])
    for task in range(3):
        accuracy = results[f"Top1_Acc_Exp/eval_phase/test_stream/Task{task:03d}/Exp{task:03d}"]
        assert accuracy > 0.9, (task, accuracy)


def test_ctr_in_bf16_keeps_old_tasks(tokenizer, sentiment_stream):
    model = tiny_ctr_model(tokenizer)
    strategy = CTR(
        model=model,
        optimizer=torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.01),
        train_mb_size=16,
        train_epochs=1,
        eval_mb_size=64,
        evaluator=quiet_evaluator(),
        plugins=[MixedPrecision("bf16")],
    )
    x0, _ = experience_tensors(sentiment_stream.test_stream[0])
    strategy.train(sentiment_stream.train_stream[0])
    logits = bf16_logits(model, x0, 0)
    for experience in sentiment_stream.train_stream[1:2]:
        strategy.train(experience)
    assert torch.equal(bf16_logits(model, x0, 0), logits)


def _naive(plugins, lr=0.1, batch=32):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
    )
    return Naive(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=lr),
        train_mb_size=batch,
        train_epochs=1,
        evaluator=quiet_evaluator(),
        plugins=plugins,
    )


class CaptureGradients(SupervisedPlugin):
    def __init__(self) -> None:
        super().__init__()
        self.grads: list[list[torch.Tensor]] = []

    def after_backward(self, strategy, **kwargs) -> None:
        self.grads.append([p.grad.clone() for p in strategy.model.parameters()])


def test_fp16_skips_a_step_whose_gradients_overflow():
    experience = SplitDigits(5, seed=0).train_stream[0]
    one_step = len(experience.dataset)
    for scale, skipped in ((2.0**120, 1), (2.0**10, 0)):  # 2**120 overflows float16
        precision = MixedPrecision("fp16", init_scale=scale)
        strategy = _naive([precision], batch=one_step)
        before = [p.detach().clone() for p in strategy.model.parameters()]
        strategy.train(experience)
        after = list(strategy.model.parameters())
        assert precision.skipped_steps == skipped
        unchanged = [torch.equal(a, b) for a, b in zip(before, after, strict=True)]
        assert all(unchanged) if skipped else not any(unchanged)
        assert precision.scaler.get_scale() == (scale / 2 if skipped else scale)


def test_fp16_scales_the_loss_after_every_plugins_terms():
    """With EWC's penalty added in ``before_backward``, the unscaled gradients equal those
    of the same autocast loss without scaling."""
    experiences = SplitDigits(5, seed=0).train_stream
    grads = {}
    for scaled in (False, True):
        plugins = [EWCPlugin(ewc_lambda=100.0)]
        if scaled:
            plugins.insert(0, MixedPrecision("fp16", init_scale=2.0**10))
        strategy = _naive(plugins, lr=0.0)
        strategy.train(experiences[0])  # EWC's importances and anchor
        with torch.no_grad():  # away from the anchor: the penalty's gradient is not zero
            for param in strategy.model.parameters():
                param.add_(0.5)
        capture = CaptureGradients()
        strategy.plugins.append(capture)
        if not scaled:
            strategy.forward = _autocast_forward(strategy, torch.float16)
        strategy.train(experiences[1])
        grads[scaled] = capture.grads[0]
    for plain, unscaled in zip(grads[False], grads[True], strict=True):
        torch.testing.assert_close(unscaled, plain, rtol=1e-2, atol=1e-5)


def _autocast_forward(strategy, dtype):
    forward = strategy.forward

    def run():
        with torch.autocast("cpu", dtype=dtype):
            return forward().float()

    return run


def test_unknown_precision_is_a_usage_error():
    assert autocast_dtype("fp32") is None
    with pytest.raises(UsageError, match="--precision 'fp8' is not one of fp32, bf16, fp16"):
        MixedPrecision("fp8")


def test_run_in_bf16_records_its_precision_and_resumes_only_in_it(tmp_path):
    from avalanche_ctr.cli import main

    args = ["run", "--strategy", "exssnet", "--epochs", "2", "--hidden-size", "32"]
    args += ["--n-experiences", "2", "--out", str(tmp_path), "--no-progress"]
    main([*args, "--precision", "bf16"])
    (record,) = (tmp_path / "runs").glob("*.json")
    finished = json.loads(record.read_text())
    assert finished["identity"]["settings"]["precision"] == "bf16"
    assert min(finished["record"]["acc_matrix"][-1]) > 0.85
    with pytest.raises(SystemExit, match="precision='bf16' there, 'fp32' here"):
        main(args)
