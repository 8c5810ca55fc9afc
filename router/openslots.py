"""Per-account caps on what holds a router open: SSE streams and `Prefer: wait` creates. One
account's thousand streams get 429s past its cap instead of taking every connection from the
others. Counted per router replica, in memory (the cost is one dict update); a slot is taken
before the response starts, so a burst of requests cannot all slip under the cap."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from vendo_core.errors import TooManyOpen


class Slot:
    """One taken slot; giving it back twice gives it back once."""

    __slots__ = ("slots", "username", "held")

    def __init__(self, slots: OpenSlots, username: str):
        self.slots, self.username, self.held = slots, username, True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.slots.give_back(self.username)


class OpenSlots:
    def __init__(self, per_account: int):
        self.per_account = per_account
        self.open: dict[str, int] = {}

    def acquire(self, username: str) -> Slot:
        """A slot of the account's, or TooManyOpen (429) when it holds its cap already."""
        n = self.open.get(username, 0)
        if self.per_account > 0 and n >= self.per_account:
            raise TooManyOpen(username, self.per_account)
        self.open[username] = n + 1
        return Slot(self, username)

    def give_back(self, username: str) -> None:
        left = self.open.get(username, 0) - 1
        if left > 0:
            self.open[username] = left
        else:
            self.open.pop(username, None)

    @contextlib.asynccontextmanager
    async def hold(self, username: str) -> AsyncIterator[None]:
        slot = self.acquire(username)
        try:
            yield
        finally:
            slot.release()
