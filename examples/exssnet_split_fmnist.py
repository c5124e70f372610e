"""ExSSNeT on Avalanche's SplitFMNIST, logged to TensorBoard.

Run ``python examples/exssnet_split_fmnist.py`` then ``tensorboard --logdir tb_logs``.
The data come from the Debian package ``dataset-fashion-mnist`` (no download).
"""

import torch
from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics, loss_metrics
from avalanche.logging import InteractiveLogger, TensorboardLogger
from avalanche.models import MTSimpleMLP
from avalanche.training.plugins import EvaluationPlugin

from avalanche_ctr.benchmarks import SplitFashionMNIST
from avalanche_ctr.training import ExSSNeT

benchmark = SplitFashionMNIST(5, seed=0)
model = MTSimpleMLP(input_size=784, hidden_size=256)
evaluator = EvaluationPlugin(
    accuracy_metrics(epoch=True, experience=True, stream=True),
    loss_metrics(epoch=True),
    forgetting_metrics(experience=True, stream=True),
    loggers=[InteractiveLogger(), TensorboardLogger("tb_logs/exssnet_split_fmnist")],
)
strategy = ExSSNeT(
    model=model,
    optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
    density=0.05,
    mask_epochs=2,
    weight_epochs=2,
    train_mb_size=128,
    eval_mb_size=1024,
    evaluator=evaluator,
)
for experience in benchmark.train_stream:
    strategy.train(experience)
    strategy.eval(benchmark.test_stream)
