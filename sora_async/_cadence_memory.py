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
from ._policy import PollPolicy

__all__ = ["LOAD_WAIT", "MAX_AGE", "SAVE_EVERY", "SAVE_WAIT", "CadenceMemory"]

logger = logging.getLogger("sora_async")

MAX_AGE = 6 * 3600.0
"""Seconds after its last verification that a remembered cadence is still tried (6 h).

Older ones are ignored: the gateway may have restarted, and the phase with it.
A remembered cadence is only ever a start: until this process's own
observations verify it, polls keep the backoff's pace (see `CadencePolicy`).
"""

SAVE_EVERY = 300.0
"""Seconds between saves of a verified cadence while it keeps holding."""

LOAD_WAIT = 0.5
"""The longest a poll waits, in seconds, for the remembered cadence to be read."""

SAVE_WAIT = 5.0
"""The longest `SoraClient.aclose` waits, in seconds, for the last save of the cadence."""


class CadenceMemory:
    """Loads and saves the cadence a client's `CadencePolicy` learns; see the module docstring.

    Args:
        policy: The client's poll policy; anything but a `CadencePolicy`
            learns nothing, and nothing is loaded or saved for it.
        store: Where the cadence is kept, or None to keep nothing.
        base_url: The API root the cadence belongs to.
    """

    __slots__ = ("_learned_at", "_load_by", "_loading", "_saved_at", "_saving", "base_url", "policy", "store")

    def __init__(self, policy: PollPolicy, store: CadenceStore | None, base_url: str) -> None:
        self.policy = policy if isinstance(policy, CadencePolicy) else None
        self.store = store if self.policy is not None else None
        self.base_url = base_url
        self._loading: asyncio.Task[None] | None = None
        self._load_by = 0.0
        self._saved_at: float | None = None
        self._learned_at: float | None = None
        self._saving: asyncio.Task[None] | None = None

    async def load(self, deadline: float | None = None) -> None:
        """Before a poll: start adopting the remembered cadence (once per client) and wait
        for it until `LOAD_WAIT` seconds after the first poll asked, and at most a quarter
        of the time left before `deadline` (loop time), so that the poll keeps the rest.

        The load goes on in the background if it takes longer (a slow disk, a
        journal another process holds): the poll is sent meanwhile, and the
        cadence is adopted when it comes, unless the policy has learned one by
        then. Cancelling the poll does not cancel the load. Never raises for
        the store's sake: a cadence that cannot be read is none (logged at
        DEBUG).
        """
        if self.store is None:
            return
        loop = asyncio.get_running_loop()
        loading = self._loading
        if loading is None or (not loading.done() and loading.get_loop() is not loop):
            loading = self._loading = loop.create_task(self._adopt())
            self._load_by = loop.time() + LOAD_WAIT
        if loading.done():
            return
        wait = self._load_by - loop.time()  # every poll waits only until then
        if deadline is not None:  # and leaves itself most of the time that is left
            wait = min(wait, (deadline - loop.time()) / 4)
        if wait > 0:
            await asyncio.wait((loading,), timeout=wait)

    async def _adopt(self) -> None:
        assert self.store is not None
        assert self.policy is not None
        try:
            stored = checked(await self.store.load_cadence(self.base_url))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a store of the caller's may fail any way: nothing remembered
            logger.debug("no remembered cadence for %s: %s", self.base_url, exc)
            return
        if stored is None:
            return
        wall, loop_now = time.time(), asyncio.get_running_loop().time()
        age = wall - stored.verified_at
        if not -60.0 <= age <= MAX_AGE or abs(stored.phase - stored.verified_at) > MAX_AGE:
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

    async def _save(self, after: asyncio.Task[None] | None = None) -> None:
        if after is not None:  # one save at a time, in order
            await asyncio.gather(after, return_exceptions=True)
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
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # remembering is an optimisation: never the caller's failure
            logger.debug("the cadence for %s could not be remembered: %s", self.base_url, exc)

    async def aclose(self) -> None:
        """Stop a load still running, then save a verified cadence one last time, waiting at
        most `SAVE_WAIT` seconds for the saves. Never raises for the store's sake."""
        loop = asyncio.get_running_loop()
        loading = self._loading
        if loading is not None and not loading.done() and loading.get_loop() is loop:
            loading.cancel()
            await asyncio.gather(loading, return_exceptions=True)
        saving = self._saving
        if saving is not None and saving.get_loop() is not loop:
            saving = None  # left on a loop that is gone: nothing to wait for here
        if self.store is not None and self.policy is not None and self.policy.estimator.verified:
            saving = self._saving = asyncio.get_running_loop().create_task(self._save(after=saving))
        if saving is None or saving.done():
            return
        done, _ = await asyncio.wait((saving,), timeout=SAVE_WAIT)
        if not done:
            saving.cancel()
            logger.debug("the cadence for %s was not saved within %.0f s", self.base_url, SAVE_WAIT)
