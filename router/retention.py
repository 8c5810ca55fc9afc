"""Retention: `retention_s` after a prediction finishes, its input, output, logs and stored files
(`predictions/{id}/`) are removed and it shows `data_removed: true`; the record itself stays.

The terminal transition (transition.lua, whoever writes it: router or replica) puts the
prediction in the retention sorted set, scored by its removal time, atomically with the status
change; this sweep, on every router replica, does the removal. Removal is idempotent, so two
replicas sweeping the same prediction is harmless."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import redis.asyncio as aioredis

from vendo_core.keys import Keys, prediction_files
from vendo_core.storage import ObjectStore

log = logging.getLogger("vendo.retention")

SWEEP_BATCH = 200

# KEYS[1] prediction hash   KEYS[2] logs string   KEYS[3] output list
# KEYS[4] events stream     KEYS[5] retention zset
# ARGV[1] prediction id     ARGV[2] JSON of {status: done-event data}
# Empties input, output and logs, leaves one `done` event (so a late SSE reader still finishes),
# keeps every key's ttl, marks `data_removed` and drops the id from the retention set.
_PURGE_LUA = """
local status = redis.call('HGET', KEYS[1], 'status')
if status then
  local ttl = redis.call('TTL', KEYS[1])
  redis.call('HDEL', KEYS[1], 'output')
  redis.call('HSET', KEYS[1], 'input', '{}', 'data_removed', '1')
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
  local done = cjson.decode(ARGV[2])[status] or '{}'
  redis.call('XADD', KEYS[4], '*', 'event', 'done', 'data', done)
  if ttl > 0 then redis.call('EXPIRE', KEYS[4], ttl) end
end
redis.call('ZREM', KEYS[5], ARGV[1])
return status and 1 or 0
"""
_DONE = json.dumps({"succeeded": "{}", "failed": json.dumps({"reason": "error"}),
                    "canceled": json.dumps({"reason": "canceled"})})


class Retention:
    def __init__(self, redis: aioredis.Redis, keys: Keys, objects: ObjectStore):
        self.redis = redis
        self.keys = keys
        self.objects = objects
        self._purge = redis.register_script(_PURGE_LUA)

    async def purge(self, pid: str) -> bool:
        """Remove one prediction's data now; False if there was no record left."""
        # files first: if this fails the id stays in the set and the next sweep tries again
        await asyncio.to_thread(self.objects.delete_prefix, prediction_files(pid))
        k = self.keys
        done = await self._purge(
            keys=[k.prediction(pid), k.prediction_logs(pid), k.prediction_output(pid),
                  k.prediction_events(pid), k.retention()],
            args=[pid, _DONE])
        return bool(done)

    async def sweep(self) -> int:
        """Purge every prediction whose retention passed; returns how many it saw."""
        due = await self.redis.zrangebyscore(self.keys.retention(), "-inf", time.time(),
                                             start=0, num=SWEEP_BATCH)
        for pid in due:
            try:
                if await self.purge(pid):
                    log.info("prediction %s: input and output removed after retention", pid)
            except Exception:  # noqa: BLE001 - retried on the next sweep
                log.exception("prediction %s: could not remove its data", pid)
        return len(due)
