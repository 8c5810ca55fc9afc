"""Webhook sends against receivers on this machine: a receiver that trickles its answer fails the
send at the total deadline, and holds at most its own destination's slots, so another receiver's
deliveries go out meanwhile."""

from __future__ import annotations

import asyncio

from router.webhook_delivery import DELIVERED, FAILED, WebhookDelivery
from router.webhooks import new_secret
from vendo_core.keys import Keys

SECRET = new_secret()


async def _server(handler) -> tuple[asyncio.AbstractServer, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/hook"


class Trickler:
    """Answers one byte of status line at a time, forever."""

    def __init__(self):
        self.connections = 0
        self.entered = asyncio.Event()

    async def __call__(self, reader, writer):
        self.connections += 1
        self.entered.set()
        await reader.readuntil(b"\r\n\r\n")
        try:
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * 100_000:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.05)
        finally:
            writer.close()


async def _fast(reader, writer):
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length")), 0)
    await reader.readexactly(length)
    writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
    await writer.drain()
    writer.close()


class CountingRedis:
    """Just enough of redis-py's pipeline for the delivery's outcome counts."""

    def __init__(self):
        self.counts: dict[str, int] = {}

    def pipeline(self, transaction=True):
        return self

    def hincrby(self, key, field, by):
        self.counts[field] = self.counts.get(field, 0) + by

    async def execute(self):
        return []


def _delivery(**kw) -> WebhookDelivery:
    return WebhookDelivery(CountingRedis(), Keys("t:"), None, None, lambda base: (lambda key: key), "http://vendo.test",
                           allow_private=True, **kw)


def test_a_trickled_answer_fails_at_the_total_deadline():
    async def go():
        trickler = Trickler()
        server, url = await _server(trickler)
        d = _delivery(timeout_s=0.5)
        try:
            assert await d.send("p", url, "msg_p_completed", b"{}", SECRET) == FAILED
            assert d.redis.counts == {"webhook_sends|failed": 1}
        finally:
            await d.http.aclose()
            server.close()
    asyncio.run(go())


def test_a_slow_destination_holds_only_its_own_slots():
    async def go():
        trickler = Trickler()
        slow_server, slow = await _server(trickler)
        fast_server, fast = await _server(_fast)
        d = _delivery(timeout_s=60, max_per_destination=1)
        try:
            first = asyncio.create_task(d.send("p1", slow, "w1", b"{}", SECRET))
            await trickler.entered.wait()
            second = asyncio.create_task(d.send("p2", slow, "w2", b"{}", SECRET))
            for i in range(5):  # another account's receiver is served while the slow one hangs
                assert await d.send(f"q{i}", fast, f"v{i}", b"{}", SECRET) == DELIVERED
            assert not first.done() and not second.done()
            assert trickler.connections == 1  # the second waits for the destination's one slot
            assert d.redis.counts == {"webhook_sends|delivered": 5}
            for t in (first, second):
                t.cancel()
            await asyncio.gather(first, second, return_exceptions=True)
            assert d._destinations == {}  # a destination no send uses is forgotten
        finally:
            await d.http.aclose()
            slow_server.close()
            fast_server.close()
    asyncio.run(go())
