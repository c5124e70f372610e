"""Every workaround for Avalanche behaviour, in one place.

Each entry names the Avalanche behaviour it corrects; all were checked against
avalanche-lib :data:`CHECKED_AGAINST`. When Avalanche changes, this is the one
module to revisit.

* :class:`PluginManagedOptimizer` and :func:`reset_optimizer_to_trainable` --
  ``make_optimizer`` / ``update_optimizer`` fail when frozen parameters are left
  out of several parameter groups;
* :class:`CopyingSIPlugin` -- ``SynapticIntelligencePlugin`` keeps views, not
  copies, of the weights on CPU;
* :class:`ZeroLossMASPlugin` -- ``MASPlugin`` stops on a loss of exactly 0;
* :class:`PackNetMultiHead` -- ``PackNetModel`` does not pass task labels to the
  model it wraps, and the ``PackNet`` strategy drops user plugins;
* :func:`held_data`, :func:`grow_head_units` and :func:`rebuild_after_restore` --
  state that Avalanche keeps where a checkpoint or a memory count must look
  for it (``Cumulative``'s data, an unmasked head's ``active_units``, AGEM's
  buffer iterator);
* :data:`PLUGIN_STATE`, :func:`plugin_state_attributes`, :data:`CONSTRUCTIBLE`,
  :func:`dataset_samples` and :func:`dataset_from_samples` -- Avalanche's plugins
  declare no state of their own: these name, per plugin class, the attributes a
  checkpoint keeps, and store a replay buffer's dataset as its sample tensors;
* :class:`PaddedMultiTaskModule` -- ``MultiTaskModule.forward`` pads a task's logits
  with zeros up to the widest head, and a padded zero wins the argmax whenever the
  task's own logits are all negative;
* :func:`widest_head` -- a ``MultiTaskModule`` sizes its output for a batch of
  several tasks by the classes seen, not by its heads' ``initial_out_features``,
  so a model with heads wider than their classes cannot run such a batch;
* :func:`task_labelled_dataset` -- Avalanche offers no public way to label a
  classification dataset with its task without reading every target, and its
  ``nc_benchmark`` reads them one by one;
* :class:`EvalAdaptation` -- evaluation adapts the model to every evaluated
  experience, creating heads for task labels it has not seen;
* :class:`PostAdaptReplayPlugin` -- Avalanche's own ``ReplayPlugin`` calls a
  method Avalanche deprecated, and the warning cannot be filtered;
* :class:`RankSlicedLoader` and :func:`unsharded_loader` -- in a distributed run
  Avalanche's data loaders shard every dataset with a ``DistributedSampler`` they create
  anew each epoch with seed 0 (the same order in every epoch, experience and run seed),
  and shard the evaluation data too, though its metrics are not reduced across ranks;
* :class:`CurrentWandBLogger` -- ``WandBLogger`` reads ``wandb.util.generate_id`` and
  ``wandb.viz.CustomChart``, which wandb has since moved, so with a current wandb it
  fails at its first run and at its first metric.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from types import ModuleType, SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from avalanche.benchmarks.utils.classification_dataset import (
    ClassificationDataset,
    TaskAwareClassificationDataset,
    TaskAwareSupervisedClassificationDataset,
)
from avalanche.benchmarks.utils.data import AvalancheDataset
from avalanche.benchmarks.utils.data_attribute import DataAttribute
from avalanche.benchmarks.utils.data_loader import MultiDatasetDataLoader
from avalanche.benchmarks.utils.flat_data import ConstantSequence
from avalanche.benchmarks.utils.utils import concat_datasets
from avalanche.logging import WandBLogger
from avalanche.models import MultiHeadClassifier, MultiTaskModule
from avalanche.models.packnet import PackNetModel, PackNetPlugin
from avalanche.training import Cumulative
from avalanche.training.plugins import (
    AGEMPlugin,
    EarlyStoppingPlugin,
    EvaluationPlugin,
    EWCPlugin,
    LRSchedulerPlugin,
    LwFPlugin,
    MASPlugin,
    ReplayPlugin,
    SynapticIntelligencePlugin,
)
from avalanche.training.plugins.clock import Clock
from avalanche.training.storage_policy import ReservoirSamplingBuffer
from avalanche.training.templates.base_sgd import PeriodicEval
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import Sampler

__all__ = [
    "CHECKED_AGAINST",
    "PluginManagedOptimizer",
    "reset_optimizer_to_trainable",
    "CopyingSIPlugin",
    "ZeroLossMASPlugin",
    "PackNetMultiHead",
    "held_data",
    "grow_head_units",
    "rebuild_after_restore",
    "PLUGIN_STATE",
    "plugin_state_attributes",
    "CONSTRUCTIBLE",
    "dataset_samples",
    "dataset_from_samples",
    "EvalAdaptation",
    "PostAdaptReplayPlugin",
    "PaddedMultiTaskModule",
    "PAD_LOGIT",
    "widest_head",
    "task_labelled_dataset",
    "RankSlicedLoader",
    "unsharded_loader",
    "CurrentWandBLogger",
]

CHECKED_AGAINST = "0.6.0"
"""The avalanche-lib version every workaround here was checked against."""


# ------------------------------------------------------------------ optimizer
def reset_optimizer_to_trainable(
    optimizer: Optimizer,
    model: nn.Module,
    own_group: tuple[list[Tensor], dict[str, Any]] | None = None,
) -> None:
    """Point ``optimizer`` at the trainable parameters of ``model`` only, with fresh state.

    Replaces Avalanche's ``update_optimizer``, which fails when frozen parameters
    are left out of several parameter groups. The hyper-parameters of the
    optimizer's first parameter group (learning rate, momentum, weight decay,
    ...) are kept. Parameters with ``requires_grad=False`` are left out, so
    neither momentum nor weight decay can move them.

    :param own_group: ``(parameters, hyper-parameters)``: these trainable parameters
        go into a second group whose hyper-parameters override the first group's
        (e.g. HAT's mask embeddings with their own learning rate).
    :raises ValueError: if ``model`` has no trainable parameter.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameter to optimise")
    hyper = {key: value for key, value in optimizer.param_groups[0].items() if key != "params"}
    optimizer.param_groups.clear()
    optimizer.state = defaultdict(dict)
    separate = {id(p) for p in own_group[0] if p.requires_grad} if own_group else set()
    optimizer.add_param_group({**hyper, "params": [p for p in params if id(p) not in separate]})
    if separate:
        grouped = [p for p in params if id(p) in separate]
        optimizer.add_param_group({**hyper, **own_group[1], "params": grouped})


class PluginManagedOptimizer:
    """Mixin for a ``SupervisedTemplate`` whose plugin points the optimizer at the
    parameters of the current phase (with :func:`reset_optimizer_to_trainable`).

    Avalanche's ``make_optimizer`` (``update_optimizer``) runs before every
    experience and fails with frozen parameters in several parameter groups; the
    plugin does its work instead, so the template's call is skipped.
    """

    def make_optimizer(self, **kwargs) -> None:
        """Skipped: the strategy's plugin sets the optimizer's parameters in
        ``before_training_exp``."""


# ------------------------------------------------------------------ baselines
class CopyingSIPlugin(SynapticIntelligencePlugin):
    """Avalanche's ``SynapticIntelligencePlugin``, with the reference weights copied.

    The plugin stores reference weights as ``param.detach().cpu().flatten()``. On a
    CUDA device that is a copy; on CPU it is a view of the parameter itself, so the
    anchor of the penalty and the "old" weights of the path integral move with the
    parameters: every importance is 0 and SI trains exactly like Naive whatever
    ``si_lambda`` is. This subclass replaces the two stored views by copies right
    after Avalanche takes them; everything else is Avalanche's code.
    """

    def before_training_exp(self, strategy, **kwargs) -> None:
        super().before_training_exp(strategy, **kwargs)
        _own(self.ewc_data[0])

    def before_training_iteration(self, strategy, **kwargs) -> None:
        super().before_training_iteration(strategy, **kwargs)
        _own(self.syn_data["old_theta"])


def _own(params: dict) -> None:
    for param in params.values():
        param.data = param.data.clone()


class ZeroLossMASPlugin(MASPlugin):
    """Avalanche's ``MASPlugin``, able to train on a mini-batch whose loss is 0.

    Its ``before_backward`` raises "Loss is not available" when ``not strategy.loss``,
    which is also true for a loss tensor equal to 0.0: a confident network meets such a
    mini-batch sooner or later (it stopped a split_fmnist run here). This subclass adds
    the smallest positive float to an exactly-zero loss before Avalanche's check, which
    changes no gradient; everything else is Avalanche's code.
    """

    def before_backward(self, strategy, **kwargs) -> None:
        loss = strategy.loss
        if isinstance(loss, Tensor) and loss.numel() == 1 and float(loss.detach()) == 0.0:
            strategy.loss = loss + torch.finfo(loss.dtype).tiny
        super().before_backward(strategy, **kwargs)


class PostAdaptReplayPlugin(ReplayPlugin):
    """Avalanche's ``ReplayPlugin``, updating its buffer without the deprecated call.

    After each experience ``ReplayPlugin`` calls ``storage_policy.update(strategy)``,
    which Avalanche deprecated; the deprecation decorator re-enables the warning with
    ``warnings.simplefilter`` on every call, so it cannot be filtered, and a user of
    ``Replay`` sees it once per experience. ``update`` only calls
    ``post_adapt(strategy, strategy.experience)``; this subclass calls that directly.
    Everything else is Avalanche's code.
    """

    def after_training_exp(self, strategy, **kwargs) -> None:
        self.storage_policy.post_adapt(strategy, strategy.experience)


class PackNetMultiHead(PackNetModel):
    """Avalanche's PackNet over a multi-head backbone, with its per-task heads left dense.

    ``PackNetModel`` calls its wrapped module without the task label, so it cannot
    hold a :class:`~avalanche.models.MultiHeadClassifier`; the heads sit after it
    instead. Each head is only ever trained on its own task, so it needs no pruning.
    Run it as ``Naive`` plus ``PackNetPlugin``: the ``PackNet`` strategy drops the
    plugins it is given.

    :param model: a multi-head model with a ``features`` backbone and a
        ``classifier`` (:class:`~avalanche.models.MultiHeadClassifier`), such as
        :class:`~avalanche_ctr.experiments.backbones.MultiHeadMLP`.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model.features)
        self.classifier = model.classifier

    def forward(self, x: Tensor, task_labels: Tensor) -> Tensor:
        return self.classifier(super().forward(x, task_labels), task_labels)


# ------------------------------------------------------------------ state
def held_data(strategy) -> dict[str, Any]:
    """State a strategy keeps outside its model and plugins: ``Cumulative`` keeps the
    data seen so far in ``strategy.dataset``."""
    if isinstance(strategy, Cumulative) and getattr(strategy, "dataset", None) is not None:
        return {"dataset": strategy.dataset}
    return {}


def grow_head_units(head: nn.Module, saved_units: Tensor | None, device: torch.device) -> None:
    """Give an unmasked head the ``active_units`` buffer shape a state dict holds:
    Avalanche grows an unmasked ``IncrementalClassifier``'s weights but not its
    ``active_units``, so a head with more than two classes has a buffer shorter than
    the one saved after training."""
    if saved_units is not None and head.active_units.shape != saved_units.shape:
        head.register_buffer("active_units", torch.zeros_like(saved_units, device=device))


def rebuild_after_restore(plugin) -> None:
    """Rebuild what a restored plugin derives from its state: ``AGEMPlugin`` draws its
    memory samples from an iterator over its buffers, which cannot be pickled."""
    if isinstance(plugin, AGEMPlugin) and plugin.buffers:
        from avalanche.benchmarks.utils.data_loader import GroupBalancedInfiniteDataLoader

        plugin.buffer_dataloader = GroupBalancedInfiniteDataLoader(
            plugin.buffers,
            batch_size=plugin.sample_size // len(plugin.buffers),
            num_workers=0,
            pin_memory=False,
            persistent_workers=False,
        )
        plugin.buffer_dliter = iter(plugin.buffer_dataloader)


PLUGIN_STATE: dict[type, tuple[str, ...]] = {
    EvaluationPlugin: ("metrics", "all_metric_results", "last_metric_results"),
    Clock: (
        "train_iterations",
        "train_exp_counter",
        "train_exp_epochs",
        "train_exp_iterations",
        "train_epoch_iterations",
        "total_iterations",
    ),
    PeriodicEval: ("do_initial", "_is_eval_updated"),
    EWCPlugin: ("saved_params", "importances"),
    SynapticIntelligencePlugin: ("ewc_data", "syn_data"),
    MASPlugin: ("params", "importance"),
    LwFPlugin: ("lwf",),
    ReplayPlugin: ("storage_policy",),
    AGEMPlugin: ("buffers",),
    PackNetPlugin: (),
    LRSchedulerPlugin: (
        "scheduler",
        "rolling_metric",
        "_was_training",
        "_just_validated",
        "_executed_train_iteration",
    ),
    EarlyStoppingPlugin: ("best_state", "best_val", "best_step"),
}
"""The attributes a checkpoint keeps of each of Avalanche's plugins, which declare no
state of their own. Everything else they hold is configuration given to their
constructor (penalty weights, sizes, PackNet's pruning schedule, which is a function)
or derived from the kept state (:func:`rebuild_after_restore`). PackNet keeps its
masks in the model; an evaluator's metric objects are restored into the new
evaluator's, attribute by attribute (:mod:`avalanche_ctr.checkpoint`)."""

CONSTRUCTIBLE: tuple[type, ...] = (ReservoirSamplingBuffer,)
"""Classes whose instances a checkpoint may create (empty, then filled with their
stored attributes) where the new strategy has no object to restore into:
``ExperienceBalancedBuffer`` creates one ``ReservoirSamplingBuffer`` per experience."""


def plugin_state_attributes(plugin) -> tuple[str, ...] | None:
    """The attributes of :data:`PLUGIN_STATE` for ``plugin``'s class or its closest
    listed base class (e.g. :class:`CopyingSIPlugin`: SI's), or ``None``."""
    for cls in type(plugin).__mro__:
        if cls in PLUGIN_STATE:
            return PLUGIN_STATE[cls]
    return None


def dataset_samples(dataset: AvalancheDataset) -> dict[str, Any]:
    """An Avalanche dataset (a replay or AGEM buffer, ``Cumulative``'s data) as tensors:
    each field of its samples stacked over the samples, and its data attributes
    (targets, task labels). A buffer is a subset of experience datasets, which a
    checkpoint cannot point at; its samples are what the strategy's data loaders read.

    The samples are read as the dataset returns them, with its transforms applied:
    exact for the benchmarks here (tensors; the only transform is the class
    remapping of ``nc_benchmark``), but a random augmentation would be stored as the
    draw made when the checkpoint was saved.

    :raises TypeError: if a field or an attribute is not made of tensors or numbers.
    """
    if not isinstance(dataset, AvalancheDataset):
        raise TypeError(f"{type(dataset).__name__} is not an Avalanche dataset")
    attributes = [
        {
            "name": name,
            "values": _stack([attr[i] for i in range(len(attr))], name),
            "use_in_getitem": bool(attr.use_in_getitem),
            "constant_runs": _constant_runs(attr.data),
        }
        for name, attr in dataset._data_attributes.items()
    ]
    n_appended = sum(a["use_in_getitem"] for a in attributes)
    items = [dataset[i] for i in range(len(dataset))]
    n_fields = len(items[0]) - n_appended if items else 0
    fields = [_stack([item[j] for item in items], f"field {j}") for j in range(n_fields)]
    return {
        "class": f"{type(dataset).__module__}.{type(dataset).__qualname__}",
        "length": len(dataset),
        "fields": fields,
        "numbers": [
            not all(isinstance(item[j], Tensor) for item in items) for j in range(n_fields)
        ],
        "attributes": attributes,
    }


def _constant_runs(data) -> bool:
    """Whether Avalanche holds an attribute as constant sequences (task labels): it is
    rebuilt so, since Avalanche concatenates one list with a constant sequence wrongly."""
    parts = getattr(data, "_datasets", [data])
    return all(isinstance(part, ConstantSequence) for part in parts)


def _attribute_data(values: Tensor, constant_runs: bool):
    if not constant_runs or len(values) == 0:
        return values.tolist()
    changes = [0, *(torch.nonzero(values[1:] != values[:-1]).flatten() + 1).tolist(), len(values)]
    runs = [
        ConstantSequence(values[start].item(), stop - start)
        for start, stop in zip(changes, changes[1:], strict=False)
    ]
    data = runs[0]
    for run in runs[1:]:
        data = data.concat(run)
    return data


def _stack(values: list, what: str) -> Tensor:
    """Tensors stacked; Python ints as int64, floats as float64 (read back exactly)."""
    if values and all(isinstance(v, Tensor) for v in values):
        return torch.stack(values)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return torch.tensor(values, dtype=torch.int64)
    if all(isinstance(v, float) for v in values):
        return torch.tensor(values, dtype=torch.float64)
    raise TypeError(f"the dataset's {what} holds values that are not tensors or numbers")


class _Samples(TorchDataset):
    """Stored sample fields, each item as the original dataset returned it: a row of
    each tensor field, a Python number for a field of numbers."""

    def __init__(self, fields: list[Tensor], numbers: list[bool]) -> None:
        self.fields = fields
        self.numbers = numbers

    def __len__(self) -> int:
        return len(self.fields[0])

    def __getitem__(self, index: int) -> tuple:
        return tuple(
            f[index].item() if number else f[index]
            for f, number in zip(self.fields, self.numbers, strict=True)
        )


_DATASET_CLASSES = {
    f"{cls.__module__}.{cls.__qualname__}": cls
    for cls in (
        AvalancheDataset,
        ClassificationDataset,
        TaskAwareClassificationDataset,
        TaskAwareSupervisedClassificationDataset,
    )
}


def dataset_from_samples(state: dict[str, Any]) -> AvalancheDataset:
    """The dataset :func:`dataset_samples` stored: the same samples in the same order,
    of the same class, with the same data attributes.

    :raises ValueError: if ``state`` names a dataset class other than Avalanche's.
    """
    cls = _DATASET_CLASSES.get(state["class"])
    if cls is None:
        raise ValueError(f"a stored dataset of class {state['class']} cannot be rebuilt")
    if state["length"] == 0:
        return concat_datasets([])
    return cls(
        [_Samples(state["fields"], state["numbers"])],
        data_attributes=[
            DataAttribute(
                _attribute_data(a["values"], a["constant_runs"]),
                a["name"],
                use_in_getitem=a["use_in_getitem"],
            )
            for a in state["attributes"]
        ],
    )


PAD_LOGIT = -1000.0
"""The logit of a padded output column: ``MultiHeadClassifier``'s own ``mask_value``,
what it writes into a head's inactive units."""


class PaddedMultiTaskModule(MultiTaskModule):
    """A ``MultiTaskModule`` whose output pads each task's logits with :data:`PAD_LOGIT`.

    ``MultiTaskModule.forward`` with a tensor of task labels (what Avalanche's
    strategies pass) writes each task's logits into a tensor of zeros ``max_class_label``
    columns wide. When tasks have heads of different widths (ASC: 2-class Bing tasks
    beside 3-class SemEval ones), a narrower task's padded zeros act as logits: the
    argmax predicts a class the task does not have whenever its own logits are all
    negative, and the training loss's softmax puts mass on them. Measured on ASC: after
    a 3-class task was learned, a 2-class task learned earlier lost one of its 31 test
    sentences to the padding, which the runner reported as forgetting although no
    parameter the task uses had changed. Padded here, a column never wins the argmax
    and weighs nothing in the softmax (``exp(-1000)`` is 0 in float32), so every task
    is trained and scored on its own classes, whatever the other heads' widths.
    """

    def forward(self, x: Tensor, task_labels: Tensor | int | None) -> Tensor:
        if task_labels is None or isinstance(task_labels, int):
            return super().forward(x, task_labels)
        tasks = torch.unique(task_labels)
        if len(tasks) == 0:
            return torch.full((0, self.max_class_label), PAD_LOGIT, device=task_labels.device)
        if len(tasks) == 1:
            logits = self.forward_single_task(x, int(tasks[0]))
            width = max(self.max_class_label, logits.shape[1])
            return F.pad(logits, (0, width - logits.shape[1]), value=PAD_LOGIT)
        parts = []
        for task in tasks:
            rows = task_labels == task
            parts.append((rows, self.forward_single_task(x[rows], int(task))))
        width = max(self.max_class_label, *(logits.shape[1] for _, logits in parts))
        out = parts[0][1].new_full((len(task_labels), width), PAD_LOGIT)
        for rows, logits in parts:
            out[rows, : logits.shape[1]] = logits
        return out


def widest_head(module: MultiTaskModule) -> None:
    """Raise ``module.max_class_label`` to the width of the widest
    :class:`MultiHeadClassifier` inside it. ``MultiTaskModule.forward`` with a
    tensor of task labels allocates ``max_class_label`` columns, which Avalanche
    counts from the classes seen only; a head built with more units
    (``initial_out_features``, e.g. superfluous units) would not fit."""
    widths = [m.max_class_label for _, m in _heads(module)]
    module.max_class_label = max([module.max_class_label, *widths])


# ------------------------------------------------------------------ datasets
def task_labelled_dataset(dataset, task_label: int, targets: Tensor):
    """``dataset`` as an Avalanche classification dataset of one task, for
    ``dataset_benchmark``.

    Avalanche 0.6 has no public function for this; its own classic benchmarks
    (``PermutedMNIST``, ``RotatedMNIST``) call the private
    ``_make_taskaware_classification_dataset`` used here. The public alternative,
    ``nc_benchmark`` over one dataset per experience, reads every target one by one
    through Avalanche's ``FlatData``: about 2.5 s per Fashion-MNIST task, 4 minutes for
    100 tasks, against well under a second per task here.
    """
    from avalanche.benchmarks.utils import _make_taskaware_classification_dataset

    return _make_taskaware_classification_dataset(dataset, task_labels=task_label, targets=targets)


# ------------------------------------------------------------------ evaluation
class EvalAdaptation:
    """What Avalanche's evaluation adds to a model, and its undoing.

    Before evaluating an experience, Avalanche adapts the model to it
    (``model_adaptation``): a ``MultiHeadClassifier`` creates a randomly initialised
    head (and its ``active_units_T<t>`` buffer) for a task label it has no head for,
    and every ``MultiTaskModule`` raises its ``max_class_label``. A head created that
    way for a task not trained yet would stay and be trained later from that
    initialisation. Built before an evaluation, it notes the heads and labels;
    :meth:`new_heads` lists the heads created since, and :meth:`undo` removes them and
    puts the labels back.

    :param model: the strategy's model.
    """

    def __init__(self, model: nn.Module) -> None:
        self.heads = {name: set(m.classifiers) for name, m in _heads(model)}
        self.max_class_label = {
            name: m.max_class_label
            for name, m in model.named_modules()
            if isinstance(m, MultiTaskModule)
        }

    def new_heads(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        """``(task label, head)`` of every head created since this was built."""
        return [
            (task, module.classifiers[task])
            for name, module in _heads(model)
            for task in sorted(set(module.classifiers) - self.heads.get(name, set()))
        ]

    def undo(self, model: nn.Module) -> None:
        for name, module in _heads(model):
            for task in set(module.classifiers) - self.heads.get(name, set()):
                del module.classifiers[task]
                module._buffers.pop(f"active_units_T{task}", None)
        for name, module in model.named_modules():
            if name in self.max_class_label and isinstance(module, MultiTaskModule):
                module.max_class_label = self.max_class_label[name]


def _heads(model: nn.Module) -> list[tuple[str, MultiHeadClassifier]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, MultiHeadClassifier)]


# ------------------------------------------------------------------ distributed
def _loader_arguments(loader: MultiDatasetDataLoader) -> dict[str, Any]:
    """What rebuilds ``loader`` (any of Avalanche's data loaders) without sharding."""
    if loader.never_ending:
        raise TypeError(
            f"{type(loader).__name__} never ends; a distributed run needs a data loader "
            "with epochs (Avalanche's TaskBalancedDataLoader, ReplayDataLoader, ...)"
        )
    return {
        "datasets": loader.datasets,
        "batch_sizes": loader.batch_sizes,
        "termination_dataset": loader.termination_dataset,
        "oversample_small_datasets": loader.oversample_small_datasets,
        "distributed_sampling": False,
        **loader.loader_kwargs,
    }


def unsharded_loader(loader: MultiDatasetDataLoader) -> MultiDatasetDataLoader:
    """``loader`` over all of its data in every process.

    In a distributed run Avalanche's evaluation loader gives each rank a shard of the
    experience (padded with repeated samples), but Avalanche's metrics are not reduced
    across ranks: each rank would report the accuracy of its own shard. With this loader
    every rank evaluates the whole experience, so each reports what a single process does.
    A loader that does not shard is returned as it is.

    :raises TypeError: if ``loader`` is not one of Avalanche's data loaders.
    """
    if not isinstance(loader, MultiDatasetDataLoader):
        raise TypeError(
            f"a distributed run needs one of Avalanche's data loaders, got {type(loader).__name__}"
        )
    if not loader.distributed_sampling:
        return loader
    return MultiDatasetDataLoader(**_loader_arguments(loader))


class _RankSlices(Sampler[list[int]]):
    """Rank ``rank``'s part of every mini-batch of ``batches`` (see :class:`RankSlicedLoader`)."""

    def __init__(self, batches: Sampler[list[int]], rank: int, world_size: int) -> None:
        self.batches = batches
        self.rank = rank
        self.world_size = world_size
        self.counts: list[int] = []

    def __iter__(self) -> Iterator[list[int]]:
        parts, counts = [], []
        for batch in self.batches:
            size, extra = divmod(len(batch), self.world_size)
            start = self.rank * size + min(self.rank, extra)
            part = list(batch[start : start + size + (self.rank < extra)])
            counts.append(len(part))
            parts.append(part or list(batch[:1]))
        self.counts = counts
        yield from parts

    def __len__(self) -> int:
        return len(self.batches)


class RankSlicedLoader(MultiDatasetDataLoader):
    """An Avalanche training data loader whose every mini-batch is this rank's part of
    the mini-batch a single process draws.

    In a distributed run Avalanche's data loaders shard each dataset with a
    ``DistributedSampler`` that they create anew every epoch with ``seed=0`` and
    ``epoch=0``: every epoch of every experience, whatever the run's seed, visits the data
    in the same order, and a run's mini-batches depend on the number of processes. This
    loader draws the global mini-batches exactly as a single process does (Avalanche's own
    samplers, drawing from the global random stream, which the ranks share) and gives rank
    ``r`` the ``r``-th of ``world_size`` contiguous, near-equal parts of each. A part that
    would be empty (a last mini-batch with fewer samples than ranks) holds the mini-batch's
    first sample instead, counted 0 in :attr:`counts`. A whole epoch's mini-batches are
    drawn when its first one is.

    :param loader: the loader Avalanche built (its datasets, batch sizes and arguments).
    :param rank: this process's rank.
    :param world_size: the number of processes.
    """

    def __init__(self, loader: MultiDatasetDataLoader, rank: int, world_size: int) -> None:
        super().__init__(**_loader_arguments(loader))
        self.rank = rank
        self.world_size = world_size
        self._slices: _RankSlices | None = None

    @property
    def counts(self) -> list[int]:
        """Per iteration of the current epoch, the samples of the global mini-batch this
        rank holds (0 for a stand-in)."""
        return self._slices.counts if self._slices is not None else []

    def _make_pytorch_loader(self, datasets, batch_sampler):
        self._slices = _RankSlices(batch_sampler, self.rank, self.world_size)
        return super()._make_pytorch_loader(datasets, self._slices)

    def _make_ffcv_loader(self, datasets, batch_sampler):
        raise TypeError("a distributed run cannot use Avalanche's FFCV loading")


# ------------------------------------------------------------------ W&B logger
class CurrentWandBLogger(WandBLogger):
    """Avalanche's ``WandBLogger`` with a current wandb: it reads the wandb module through
    :class:`_WandBNames`, which finds ``util.generate_id`` and ``viz.CustomChart`` where
    wandb keeps them now (``wandb.sdk.lib.runid``, ``wandb.plot``). The wandb module
    itself is not changed."""

    def import_wandb(self) -> None:
        super().import_wandb()
        self.wandb = _WandBNames(self.wandb)


class _WandBNames:
    """The ``wandb`` module as Avalanche 0.6's ``WandBLogger`` names it."""

    def __init__(self, module: ModuleType) -> None:
        self._module = module
        if not hasattr(module.util, "generate_id"):
            from wandb.sdk.lib.runid import generate_id

            self.util = SimpleNamespace(generate_id=generate_id)
        if getattr(module, "viz", None) is None:
            self.viz = SimpleNamespace(CustomChart=module.plot.CustomChart)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)
