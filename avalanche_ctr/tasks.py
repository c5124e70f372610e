"""Task-label checks shared by the plugins of this package."""

from __future__ import annotations

__all__ = ["single_task_label"]


def single_task_label(experience, method: str) -> int:
    """The one task label of ``experience``; ``ValueError`` naming ``method`` otherwise."""
    labels = list(experience.task_labels)
    if len(labels) != 1:
        raise ValueError(
            f"experience {experience.current_experience} has task labels {labels}; {method} "
            "needs exactly one task label per experience (a task-incremental stream)"
        )
    return int(labels[0])
