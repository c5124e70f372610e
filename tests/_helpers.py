"""Helpers shared by the test suite (``tests`` is on pytest's ``pythonpath``)."""

import importlib.util
from pathlib import Path
from types import ModuleType

import torch
from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training.plugins import EvaluationPlugin

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """The script ``benchmarks/<name>.py`` as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def state_bytes(module: torch.nn.Module) -> int:
    """Bytes of every tensor in the module's state dict."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def quiet_evaluator() -> EvaluationPlugin:
    return EvaluationPlugin(accuracy_metrics(experience=True, stream=True), loggers=[])


def experience_tensors(experience) -> tuple[torch.Tensor, torch.Tensor]:
    """All inputs and targets of an experience's dataset, stacked."""
    dataset = experience.dataset.eval()
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([item[0] for item in items]), torch.tensor([int(item[1]) for item in items])


@torch.no_grad()
def task_logits(model: torch.nn.Module, x: torch.Tensor, task: int) -> torch.Tensor:
    model.eval()
    return model(x, task)


class NaNAt(SupervisedPlugin):
    """A NaN in the first sample of one training mini-batch: that of ``iteration`` in
    ``epoch`` of experience ``experience`` (all counted from 0). The NaN goes into the
    input, or with ``module`` (e.g. an encoder's embeddings, for token-id inputs) into
    that module's output. ``state`` keeps the model's state just before that forward
    pass."""

    def __init__(self, experience: int, epoch: int, iteration: int, module=None) -> None:
        super().__init__()
        self.at = (experience, epoch, iteration)
        self.module = module
        self.state: dict[str, torch.Tensor] | None = None
        self._hook = None

    def before_forward(self, strategy, **kwargs) -> None:
        clock = strategy.clock
        now = (strategy.experience.current_experience, clock.train_exp_epochs)
        if (*now, clock.train_epoch_iterations) != self.at:
            return
        self.state = {k: v.clone() for k, v in strategy.model.state_dict().items()}
        if self.module is None:
            x = strategy.mbatch[0].clone()
            x[0].view(-1)[0] = float("nan")
            strategy.mbatch[0] = x
        else:
            self._hook = self.module.register_forward_hook(_first_sample_nan)

    def after_forward(self, strategy, **kwargs) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None


def _first_sample_nan(module, args, output):
    output = output.clone()
    output[0].view(-1)[0] = float("nan")
    return output


def assert_state_unchanged(before: dict[str, torch.Tensor], model: torch.nn.Module) -> None:
    """Every tensor of ``model``'s state equals ``before`` bit for bit (NaN fails)."""
    after = model.state_dict()
    assert after.keys() == before.keys()
    changed = [k for k, v in before.items() if not torch.equal(v, after[k])]
    assert not changed, changed
