"""Helpers shared by the test suite (``tests`` is on pytest's ``pythonpath``)."""

import torch
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training.plugins import EvaluationPlugin


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
