"""The loggers of every run: Avalanche's ``TensorboardLogger`` always, its ``CSVLogger``
(``--csv``) and ``WandBLogger`` (``--wandb [PROJECT]``) on request.

Each run (one strategy, one seed) logs to its own place in the run folder ``out``:

* TensorBoard: ``out/tensorboard/<strategy>/seed<k>``;
* CSV: ``out/csv/<strategy>/seed<k>/training_results.csv`` and ``eval_results.csv``
  (Avalanche's columns: per training epoch, and per evaluated experience);
* W&B: one W&B run named ``<strategy>-seed<k>`` in the project, grouped by ``out``'s
  name, with the run's identity as its config; its local files in ``out/wandb``
  (``WANDB_MODE=offline`` keeps them there, ``wandb sync`` uploads them later).

These logs are not part of the run's results: a run resumed from its checkpoint logs
the experiences it trains from there (Avalanche's ``CSVLogger`` starts its files again,
W&B starts a new run), and the loggers do not change the run's identity. Under torchrun
only rank 0 logs (the caller builds no loggers on the other ranks).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avalanche.logging import BaseLogger, CSVLogger, TensorboardLogger

from avalanche_ctr.compat import CurrentWandBLogger
from avalanche_ctr.experiments.errors import UsageError

__all__ = ["WANDB_PROJECT", "RunLoggers", "close_loggers"]

WANDB_PROJECT = "avalanche-ctr"
"""The W&B project of ``--wandb`` given without a name."""


@dataclass(frozen=True)
class RunLoggers:
    """Which loggers every run gets besides TensorBoard.

    :param wandb: the W&B project to log to (``None``: no W&B).
    :param csv: whether to write Avalanche's CSV logs.
    """

    wandb: str | None = None
    csv: bool = False

    def check(self) -> None:
        """:class:`UsageError` if ``--wandb`` is asked for without the wandb package (checked
        before any run starts)."""
        if self.wandb is None:
            return
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise UsageError(
                "--wandb needs the wandb package, an optional dependency: "
                "pip install 'avalanche-ctr[wandb]' (or leave --wandb out)"
            ) from None

    def build(self, out: Path, strategy: str, seed: int, config: dict[str, Any]) -> list:
        """The loggers of the run of ``strategy`` with ``seed`` in the run folder ``out``;
        ``config`` (the run's identity) becomes the W&B run's config."""
        name = f"{strategy}-seed{seed}"
        loggers: list[BaseLogger] = [
            TensorboardLogger(out / "tensorboard" / strategy / f"seed{seed}")
        ]
        if self.csv:
            loggers.append(CSVLogger(out / "csv" / strategy / f"seed{seed}"))
        if self.wandb is not None:
            loggers.append(_wandb_logger(self.wandb, name, out, config))
        return loggers


def _wandb_logger(project: str, name: str, out: Path, config: dict[str, Any]) -> BaseLogger:
    import wandb

    folder = out / "wandb"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return CurrentWandBLogger(
            project_name=project,
            run_name=name,
            save_code=False,
            config=config,
            dir=folder,
            params={"group": out.resolve().name},
        )
    except wandb.errors.Error as error:
        raise UsageError(
            f"--wandb {project}: W&B could not start a run ({error}); log in with "
            "'wandb login', or set WANDB_MODE=offline to keep the logs in "
            f"{folder} and 'wandb sync' them later"
        ) from None


def close_loggers(loggers: list) -> None:
    """Flush and close every logger of a run (the W&B run is finished)."""
    for logger in loggers:
        if isinstance(logger, TensorboardLogger):
            logger.writer.close()
        elif isinstance(logger, CSVLogger):
            logger.close()
        elif isinstance(logger, CurrentWandBLogger):
            logger.wandb.finish()
