"""Helpers of the HAT tests (``tests`` is on pytest's ``pythonpath``)."""

import torch
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training.plugins import EvaluationPlugin

from avalanche_ctr.experiments.backbones import MultiHeadMLP
from avalanche_ctr.hat import HAT, HATDiagnostics


def adam(params) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=0.01)


def hat_evaluator() -> EvaluationPlugin:
    return EvaluationPlugin(accuracy_metrics(experience=True), HATDiagnostics(), loggers=[])


def hat_strategy(seed: int = 0, *, optimizer=adam, epochs: int = 2, **kwargs) -> HAT:
    """HAT over an MLP 64-64-64 with per-task heads."""
    torch.manual_seed(seed)
    model = MultiHeadMLP(64, (64, 64))
    return HAT(
        model=model,
        optimizer=optimizer(model.parameters()),
        evaluator=kwargs.pop("evaluator", None) or hat_evaluator(),
        train_mb_size=32,
        train_epochs=epochs,
        eval_mb_size=512,
        **kwargs,
    )
