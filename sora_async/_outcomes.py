"""How a wait ends when it does not end in SUCCESS: the errors that carry a task.

They sit above `_models` (they hold a `Task`) so that `_errors` depends on
nothing; both appear in the tree drawn in `_errors`.
"""

from __future__ import annotations

from ._errors import SoraError
from ._models import Task

__all__ = ["Outcome", "TaskFailedError", "WaitTimeoutError"]


class TaskFailedError(SoraError):
    """The task ended with status FAILURE.

    Attributes:
        task: The final `Task` snapshot.
        task_id: The id of the failed task.
        fail_reason: The gateway's `fail_reason` (may be empty).
    """

    def __init__(self, task: Task) -> None:
        reason = task.fail_reason or "no reason given"
        super().__init__(f"task {task.task_id} failed: {reason}")
        self.task = task
        self.task_id: str = task.task_id
        self.fail_reason = task.fail_reason


class WaitTimeoutError(SoraError, TimeoutError):
    """The wait's deadline passed before the task reached SUCCESS or FAILURE.

    The task may still finish later; wait for it again with the same id.

    Attributes:
        task_id: The task that was being waited for.
        last_task: The last snapshot seen, or None if no poll succeeded. To
            keep long waits small its nested payload (`data`, `.video`) is
            not kept; poll `get_task` for the full object.
        timeout: The caller's timeout in seconds, or None.
        elapsed: Seconds actually waited, from the start of the wait to the
            moment it gave up.
        polls: How many polls were sent, answered or not.
    """

    def __init__(
        self,
        task_id: str,
        last_task: Task | None,
        timeout: float | None,
        *,
        elapsed: float | None = None,
        polls: int = 0,
    ) -> None:
        seen = f"last status {last_task.raw_status}" if last_task else "no status seen"
        if elapsed is None:
            elapsed = timeout
        waited = f" after {elapsed:,.1f} s" if elapsed is not None else ""
        budget = f" of a {timeout:,.1f} s timeout" if timeout is not None and elapsed != timeout else ""
        plural = "" if polls == 1 else "s"
        super().__init__(f"task {task_id} did not finish{waited}{budget} ({polls} poll{plural}, {seen})")
        self.task_id: str = task_id
        self.last_task = last_task
        self.timeout = timeout
        self.elapsed = elapsed
        self.polls = polls


Outcome = Task | SoraError
"""A SUCCESS `Task`, or the `SoraError` that waiting for that task raised."""
