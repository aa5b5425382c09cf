"""The asyncio side of the budget: waiting for admission, sleeping, and closing.

A `Gate` belongs to one client on one event loop. It lets coroutines wait
for a `Budget` to admit them, and sleep until a time, each bounded by a
deadline, and it ends every such wait at once when the client closes.

There is no `asyncio.wait_for` here (CPython gh-86296 can lose a cancel that
arrives as the awaited thing completes). A waiter awaits a bare future that
a timer or a wake-up resolves; the budget admits a waiter only inside the
waiter's own synchronous step, so a cancelled waiter never holds a slot or
a token, and its `finally` hands the turn to the next in line.
"""

from __future__ import annotations

import asyncio
import math

from ._budget import Budget
from ._errors import SoraError

__all__ = ["DeadlineReached", "Gate"]


class DeadlineReached(Exception):
    """The caller's deadline came before the budget admitted it (internal signal)."""


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Gate:
    """Admission, sleeping and closing for one client on one event loop.

    Args:
        loop: The event loop every wait of this gate runs on.
    """

    __slots__ = ("_closed", "_loop", "_parked", "_rung", "_waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        # (budget, ticket) -> the future that wakes that queued caller.
        self._waiters: dict[tuple[int, int], asyncio.Future[None]] = {}
        # Every future a caller is parked on, with its timer, so that close()
        # can end them all.
        self._parked: dict[asyncio.Future[None], asyncio.TimerHandle | None] = {}
        self._closed: SoraError | None = None
        # The latest time a timer of this gate rang for (see `now`).
        self._rung = -math.inf

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop this gate's waits run on."""
        return self._loop

    def now(self) -> float:
        """The loop's clock, in seconds, never earlier than a timer of this gate that has rung.

        asyncio runs a timer up to one clock resolution before its time (and
        a virtual clock may round below it): a waiter woken for time T that
        read the bare clock could find T not yet come and park again for T,
        at once, for as long as the clock stands still.
        """
        return max(self._loop.time(), self._rung)

    def try_enter(self, budget: Budget) -> bool:
        """Take a slot at once if nobody is queued and `budget` allows it; else False.

        The polling hot path: no coroutine is made when the budget is free.

        Raises:
            SoraError: The gate was closed (the client's `ClientClosedError`).
        """
        if self._closed is not None:
            raise self._closed
        return budget.admit(None, self.now()) == 0.0

    async def enter(self, budget: Budget, deadline: float | None) -> None:
        """Wait until `budget` admits one request, holding a slot until `leave`.

        Raises:
            DeadlineReached: `deadline` (loop time) came first; nothing is held.
            SoraError: The gate was closed (the client's `ClientClosedError`).
        """
        if self.try_enter(budget):
            return
        ticket = budget.join()
        key = (id(budget), ticket)
        admitted = False
        try:
            while True:
                now = self.now()
                wait = budget.admit(ticket, now)
                if wait == 0.0:
                    admitted = True
                    return
                if deadline is not None and now >= deadline:
                    raise DeadlineReached
                wake_at = math.inf if wait is None else now + wait
                if deadline is not None:
                    wake_at = min(wake_at, deadline)
                future = self._park(wake_at)
                self._waiters[key] = future
                try:
                    await future
                finally:
                    self._waiters.pop(key, None)
                    self.disarm(future)
        finally:
            if not admitted:
                budget.leave(ticket)
            self._wake_head(budget)

    def leave(self, budget: Budget) -> None:
        """Give back the slot taken by `enter`, and wake the next caller in line."""
        budget.release()
        self._wake_head(budget)

    async def sleep_until(self, when: float) -> None:
        """Sleep until loop time `when`, or raise at once if the gate is closed."""
        future = self.alarm(when)
        try:
            await future
        finally:
            self.disarm(future)

    def alarm(self, when: float) -> asyncio.Future[None]:
        """A future that resolves at loop time `when`, or earlier through `ring`.

        It fails with the close error if the gate closes first. The caller
        `disarm`s it once it has awaited it or given up on it.
        """
        return self._park(when)

    def ring(self, future: asyncio.Future[None]) -> None:
        """Resolve an alarm now."""
        _wake(future)

    def close(self, error: SoraError) -> None:
        """End every wait of this gate with `error`; later waits raise it at once."""
        self._closed = error
        parked, self._parked = self._parked, {}
        for future, handle in parked.items():
            if handle is not None:
                handle.cancel()
            if not future.done():
                future.set_exception(error)
                future.exception()  # mark it retrieved, so an orphan does not warn

    def _park(self, when: float) -> asyncio.Future[None]:
        if self._closed is not None:
            raise self._closed
        future: asyncio.Future[None] = self._loop.create_future()
        self._parked[future] = (
            None if when == math.inf else self._loop.call_at(when, self._ring_at, when, future)
        )
        return future

    def _ring_at(self, when: float, future: asyncio.Future[None]) -> None:
        self._rung = max(self._rung, when)
        _wake(future)

    def disarm(self, future: asyncio.Future[None]) -> None:
        """Forget a parked future and drop its timer (after it was awaited or abandoned)."""
        handle = self._parked.pop(future, None)
        if handle is not None:
            handle.cancel()

    def _wake_head(self, budget: Budget) -> None:
        head = budget.head()
        if head is not None:
            future = self._waiters.get((id(budget), head))
            if future is not None:
                _wake(future)
