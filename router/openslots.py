"""Per-account caps on what holds a router open: SSE streams and `Prefer: wait` creates. One
account's thousand streams get 429s past its cap instead of taking every connection from the
others. Counted per router replica (in memory: the cost is one dict update)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from vendo_core.errors import TooManyOpen


class OpenSlots:
    def __init__(self, per_account: int):
        self.per_account = per_account
        self.open: dict[str, int] = {}

    def check(self, username: str) -> None:
        """TooManyOpen (429) when the account holds its cap already."""
        if self.per_account > 0 and self.open.get(username, 0) >= self.per_account:
            raise TooManyOpen(username, self.per_account)

    def take(self, username: str) -> None:
        self.open[username] = self.open.get(username, 0) + 1

    def give_back(self, username: str) -> None:
        left = self.open.get(username, 0) - 1
        if left > 0:
            self.open[username] = left
        else:
            self.open.pop(username, None)

    @contextlib.asynccontextmanager
    async def hold(self, username: str) -> AsyncIterator[None]:
        self.check(username)
        self.take(username)
        try:
            yield
        finally:
            self.give_back(username)
