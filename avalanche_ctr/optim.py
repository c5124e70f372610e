"""Optimizer helpers shared by the strategies and plugins of this package."""

from __future__ import annotations

from collections import defaultdict

from torch import nn
from torch.optim import Optimizer

__all__ = ["reset_optimizer_to_trainable"]


def reset_optimizer_to_trainable(optimizer: Optimizer, model: nn.Module) -> None:
    """Point ``optimizer`` at the trainable parameters of ``model`` only, with fresh state.

    The hyper-parameters of the optimizer's first parameter group (learning
    rate, momentum, weight decay, ...) are kept. Parameters with
    ``requires_grad=False`` are left out, so neither momentum nor weight decay
    can move them. This replaces Avalanche 0.6's ``update_optimizer``, which
    fails when frozen parameters are left out of several parameter groups.

    :raises ValueError: if ``model`` has no trainable parameter.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameter to optimise")
    hyper = {key: value for key, value in optimizer.param_groups[0].items() if key != "params"}
    optimizer.param_groups.clear()
    optimizer.state = defaultdict(dict)
    optimizer.add_param_group({**hyper, "params": params})
