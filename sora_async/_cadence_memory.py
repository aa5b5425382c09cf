"""A client's learned cadence, carried from one process to the next.

`CadenceMemory` loads what an earlier process remembered for the client's
API root before the client's first poll, hands it to the client's
`CadencePolicy` on probation (`SweepEstimator.adopt`), and saves what this
process verified: when it is first verified, every `SAVE_EVERY` seconds
after that while it holds, and when the client closes. The store is the
client's journal, or a `CadenceFile` in the state folder without one
(`_cadence_store`).

The estimator counts time on the event loop's clock (`loop.time()`); the
store in Unix time, so that another process can use it. The offset between
the two is read at each load and save.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ._cadence import CadencePolicy
from ._cadence_store import CadenceStore, StoredCadence, checked
from ._errors import JournalError
from ._policy import PollPolicy

__all__ = ["MAX_AGE", "SAVE_EVERY", "CadenceMemory"]

logger = logging.getLogger("sora_async")

MAX_AGE = 6 * 3600.0
"""Seconds after its last verification that a remembered cadence is still tried (6 h).

Older ones are ignored: the gateway may have restarted, and the phase with it.
A remembered cadence is only ever a start: until this process's own
observations verify it, polls keep the backoff's pace (see `CadencePolicy`).
"""

SAVE_EVERY = 300.0
"""Seconds between saves of a verified cadence while it keeps holding."""


class CadenceMemory:
    """Loads and saves the cadence a client's `CadencePolicy` learns; see the module docstring.

    Args:
        policy: The client's poll policy; anything but a `CadencePolicy`
            learns nothing, and nothing is loaded or saved for it.
        store: Where the cadence is kept, or None to keep nothing.
        base_url: The API root the cadence belongs to.
    """

    __slots__ = ("_learned_at", "_loaded", "_saved_at", "_saving", "base_url", "policy", "store")

    def __init__(self, policy: PollPolicy, store: CadenceStore | None, base_url: str) -> None:
        self.policy = policy if isinstance(policy, CadencePolicy) else None
        self.store = store if self.policy is not None else None
        self.base_url = base_url
        self._loaded: asyncio.Future[None] | None = None
        self._saved_at: float | None = None
        self._learned_at: float | None = None
        self._saving: asyncio.Task[None] | None = None

    async def load(self) -> None:
        """Adopt the remembered cadence, once, before the first poll; concurrent callers wait for it.

        Never raises for the store's sake: a cadence that cannot be read is
        none (logged at DEBUG).
        """
        if self.store is None:
            return
        if self._loaded is None:
            self._loaded = asyncio.get_running_loop().create_future()
            try:
                await self._adopt()
            finally:
                self._loaded.set_result(None)
        elif not self._loaded.done():
            await asyncio.shield(self._loaded)

    async def _adopt(self) -> None:
        assert self.store is not None
        assert self.policy is not None
        try:
            stored = checked(await self.store.load_cadence(self.base_url))
        except (JournalError, OSError) as exc:
            logger.debug("no remembered cadence for %s: %s", self.base_url, exc)
            return
        if stored is None:
            return
        wall, loop_now = time.time(), asyncio.get_running_loop().time()
        age = wall - stored.verified_at
        if not -60.0 <= age <= MAX_AGE:
            logger.debug("the remembered cadence for %s is %.0f s old: not used", self.base_url, age)
            return
        estimator = self.policy.estimator
        if estimator.confident:
            return  # learned already, by polls that beat the store
        start = stored.phase - wall + loop_now
        estimator.adopt(stored.period, start, start + stored.spread, now=loop_now)
        if estimator.learned() is not None:
            self._learned_at = stored.learned_at
            logger.debug(
                "adopted the remembered cadence for %s: %.3f s, %.0f s old", self.base_url, stored.period, age
            )

    def note(self) -> None:
        """After an answer: start a save if the cadence is verified and the last save is old enough."""
        if self.store is None or self.policy is None or not self.policy.estimator.verified:
            return
        now = time.time()
        if self._saved_at is not None and now - self._saved_at < SAVE_EVERY:
            return
        if self._saving is not None and not self._saving.done():
            return
        self._saved_at = now
        self._saving = asyncio.get_running_loop().create_task(self._save())

    async def _save(self) -> None:
        assert self.store is not None
        assert self.policy is not None
        learned = self.policy.estimator.learned(verified=True)
        if learned is None:
            return
        period, start, end = learned
        wall = time.time()
        shift = wall - asyncio.get_running_loop().time()
        if self._learned_at is None:
            self._learned_at = wall
        cadence = StoredCadence(
            period=period,
            phase=start + shift,
            spread=end - start,
            learned_at=self._learned_at,
            verified_at=wall,
        )
        try:
            await self.store.save_cadence(self.base_url, cadence)
        except (JournalError, OSError) as exc:
            logger.debug("the cadence for %s could not be remembered: %s", self.base_url, exc)

    async def aclose(self) -> None:
        """Save a verified cadence one last time and wait for any save under way. Never raises
        for the store's sake."""
        saving = self._saving
        if saving is not None and not saving.done():
            await asyncio.gather(saving, return_exceptions=True)
        if self.store is not None and self.policy is not None and self.policy.estimator.verified:
            await self._save()
