from types import SimpleNamespace

import pytest
import torch

from avalanche_ctr.finite import NonFiniteError, _all_finite, check_finite_step


def step(loss: float, grads: dict[str, float], frozen_grad: float = 0.0):
    """A strategy after its backward pass: a model with parameters ``a``, ``b`` (in the
    optimizer) and ``frozen`` (not in it, with a stale gradient)."""
    model = torch.nn.ParameterDict({n: torch.nn.Parameter(torch.zeros(3)) for n in "ab"})
    model["frozen"] = torch.nn.Parameter(torch.zeros(2))
    for name, value in grads.items():
        model[name].grad = torch.tensor([1.0, value, -1.0])
    model["frozen"].grad = torch.full((2,), frozen_grad)
    return SimpleNamespace(
        loss=torch.tensor([loss]),  # Avalanche's loss has shape (1,)
        optimizer=torch.optim.SGD([model["a"], model["b"]], lr=0.1),
        model=model,
        experience=SimpleNamespace(current_experience=2, task_labels=[5]),
        clock=SimpleNamespace(train_exp_epochs=1, train_epoch_iterations=4),
    )


def test_finite_steps_pass_even_with_gradients_whose_2_norm_overflows():
    check_finite_step(step(0.5, {"a": 1e30, "b": -3e38}, frozen_grad=float("nan")))


def test_a_nan_gradient_names_the_parameter_experience_and_iteration():
    message = (
        r"^the gradient of b is not finite in training experience 2 \(task 5\), epoch 1, "
        r"iteration 4 \(counted from 0\); training stopped before the optimizer step"
    )
    with pytest.raises(NonFiniteError, match=message):
        check_finite_step(step(0.5, {"a": 2.0, "b": float("nan")}))


def test_an_infinite_loss_stops_training_even_with_finite_gradients():
    with pytest.raises(NonFiniteError, match=r"^the loss is inf in training experience 2"):
        check_finite_step(step(float("inf"), {"a": 1.0}))


@pytest.mark.parametrize("fused", [False, True])  # aminmax (CPU), get_total_norm (CUDA)
def test_both_reductions_find_nan_and_inf_anywhere_and_pass_huge_finite_values(fused):
    loss = torch.tensor(0.1)
    for bad in (float("nan"), float("inf"), -float("inf")):
        for position in range(3):
            grads = [torch.full((4,), 3e38), torch.zeros(2, 3), torch.empty(0)]
            grads[1].view(-1)[position] = bad
            assert not _all_finite(loss, grads, fused=fused)
    assert _all_finite(loss, [torch.full((4,), -3e38), torch.empty(0)], fused=fused)
    assert not _all_finite(torch.tensor(float("nan")), [torch.ones(2)], fused=fused)
