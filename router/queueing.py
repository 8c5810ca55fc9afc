"""The router's own queue in front of each Serve app: predictions are handed to Serve only as fast
as the app has slots for them, so a burst waits here, where a freed slot goes to the next one at
once, instead of in Serve's handle, where every queued call retries on an exponential back-off
(25 ms rising to 500 ms) and a freed slot can sit unused for half a second.

Order: first come, first served within an account; round-robin between accounts, so one account's
thousand queued predictions hold another account's next one back by at most one prediction per
account ahead of it in the round (not weighted: every account has the same share of a model)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque


class FairQueue:
    """`slots` at once; the rest wait in per-account FIFOs served round-robin."""

    def __init__(self, slots: int):
        self.slots = max(1, slots)
        self.used = 0
        self._waiting: OrderedDict[str, deque[asyncio.Future]] = OrderedDict()
        self._queued = 0
        self._by_key: dict[str, asyncio.Future] = {}

    @property
    def queued(self) -> int:
        """How many wait for a slot (cancelled waiters are dropped as they come up)."""
        return self._queued

    def resize(self, slots: int) -> None:
        self.slots = max(1, slots)
        self._grant()

    async def acquire(self, account: str, key: str) -> None:
        """Take a slot, waiting in `account`'s line for it. Raises CancelledError, holding nothing,
        when cancelled while waiting (its task, or `cancel(key)`)."""
        if self.used < self.slots and not self._waiting:
            self.used += 1
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(account, deque()).append(fut)
        self._queued += 1
        self._by_key[key] = fut
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # granted as its task was cancelled: pass the slot on
            else:
                fut.cancel()  # skipped when its turn comes
            raise
        finally:
            self._by_key.pop(key, None)

    def cancel(self, key: str) -> bool:
        """Stop `key` waiting (its `acquire` raises CancelledError); False if it does not wait."""
        fut = self._by_key.pop(key, None)
        return fut is not None and fut.cancel()

    def release(self) -> None:
        self.used -= 1
        self._grant()

    def _grant(self) -> None:
        while self.used < self.slots and self._waiting:
            account, line = next(iter(self._waiting.items()))
            fut = line.popleft()
            del self._waiting[account]
            if line:
                self._waiting[account] = line  # to the back of the round
            self._queued -= 1
            if fut.done():  # its waiter was cancelled
                continue
            fut.set_result(None)
            self.used += 1
