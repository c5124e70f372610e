import pytest
import torch
from avalanche.training.plugins import EvaluationPlugin
from sklearn.metrics import f1_score

from avalanche_ctr.metrics import MacroF1, macro_f1_metrics


def test_macro_f1_matches_scikit_learn_within_a_task():
    targets = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0])
    predicted = torch.tensor([0, 1, 1, 1, 0, 2, 1, 0])
    metric = MacroF1()
    metric.update(predicted, targets, 3)
    assert metric.result() == pytest.approx(f1_score(targets, predicted, average="macro"))


def test_macro_f1_keeps_tasks_apart():
    metric = MacroF1()
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [2.0, 0.0]])
    metric.update(logits, torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 1, 1]))
    # task 0 is perfect (F1 1, 1); task 1: class 0 F1 = 2/3, class 1 F1 = 0
    assert metric.result() == pytest.approx((1 + 1 + 2 / 3 + 0) / 4)
    metric.reset()
    assert metric.result() == 0.0


def test_macro_f1_is_reported_per_experience_and_stream():
    from avalanche.models import MTSimpleMLP
    from avalanche.training import Naive

    from avalanche_ctr.benchmarks import SplitDigits

    benchmark = SplitDigits(5, seed=0)
    model = MTSimpleMLP(input_size=64, hidden_size=32)
    strategy = Naive(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        train_mb_size=32,
        evaluator=EvaluationPlugin(*macro_f1_metrics(experience=True, stream=True), loggers=[]),
    )
    strategy.train(benchmark.train_stream[0])
    results = strategy.eval(benchmark.test_stream[:1])
    assert 0.8 <= results["MacroF1_Exp/eval_phase/test_stream/Task000/Exp000"] <= 1.0
    assert 0.8 <= results["MacroF1_Stream/eval_phase/test_stream/Task000"] <= 1.0
