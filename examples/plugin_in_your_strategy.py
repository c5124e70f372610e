"""ExSSNeT's plugin inside a strategy you configure yourself, next to your own plugins.

The plugin brings ExSSNeT's lifecycle (mask phase, exclusive weight phase, KKT) to any
Avalanche strategy: here Avalanche's ``Naive`` with SGD, an early log of our own, and
Avalanche's ``LRSchedulerPlugin``. Run ``python examples/plugin_in_your_strategy.py``
(SplitDigits ships with scikit-learn: no download).
"""

import torch
from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin, LRSchedulerPlugin

from avalanche_ctr.benchmarks import SplitDigits
from avalanche_ctr.experiments.backbones import MultiHeadMLP
from avalanche_ctr.models import convert_to_supermask
from avalanche_ctr.training import ExSSNeTPlugin


class TaskLog(SupervisedPlugin):
    """Prints which earlier task KKT chose to start each new mask from."""

    def __init__(self, exssnet: ExSSNeTPlugin) -> None:
        super().__init__()
        self.exssnet = exssnet

    def after_training_exp(self, strategy, **kwargs) -> None:
        choice = self.exssnet.last_kkt
        source = "none (first task)" if choice is None else choice.source
        print(f"task {strategy.experience.current_experience}: KKT source {source}")


benchmark = SplitDigits(5, seed=0)
net = convert_to_supermask(MultiHeadMLP(64, (256, 256)), density=0.1)
optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
exssnet = ExSSNeTPlugin(mask_epochs=3, weight_epochs=2)
strategy = Naive(
    model=net,
    optimizer=optimizer,
    train_mb_size=32,
    train_epochs=5,  # = mask_epochs + weight_epochs
    plugins=[
        exssnet,
        TaskLog(exssnet),
        LRSchedulerPlugin(torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)),
    ],
    evaluator=EvaluationPlugin(accuracy_metrics(experience=True, stream=True), loggers=[]),
)
for i, experience in enumerate(benchmark.train_stream):
    strategy.train(experience)
    results = strategy.eval(benchmark.test_stream)  # every task, trained or not yet
    accuracies = [
        results[f"Top1_Acc_Exp/eval_phase/test_stream/Task{j:03d}/Exp{j:03d}"] for j in range(5)
    ]
    print(
        f"  accuracy on tasks 0..{i}: {sum(accuracies[: i + 1]) / (i + 1):.3f}; "
        f"on the tasks not trained yet (chance): {accuracies[i + 1 :]}"
    )
