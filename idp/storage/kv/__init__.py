"""Key-value state: server-side sessions, rate limits, denylists, one-time ids and short locks.

One small async interface, two backends:

* :class:`MemoryStore` keeps everything in a dict of the running process. It is the embedded
  default for a single node and needs no infrastructure.
* :class:`RedisStore` keeps the state in Redis so several instances behind a load balancer agree
  on who is logged in, which tokens are revoked and how many attempts a client has left.

Both backends implement the same semantics (the same test suite runs against both), including
Redis' refusal to treat a string key as a set ("WRONGTYPE"), so code written against the memory
store does not break when it is deployed with Redis.
"""

from __future__ import annotations

from idp.storage.kv.base import KeyValueError, KeyValueStore, KeyValueUnavailable
from idp.storage.kv.memory import MemoryStore
from idp.storage.kv.redis_store import RedisStore
from idp.storage.urls import redact_url

__all__ = (
    "KeyValueError",
    "KeyValueStore",
    "KeyValueUnavailable",
    "MemoryStore",
    "RedisStore",
    "open_kv_store",
    "redact_url",
)


def open_kv_store(redis_url: str | None, prefix: str) -> KeyValueStore:
    """Redis when a URL is configured (multi-instance deployments), else the in-process store."""
    if redis_url:
        return RedisStore(redis_url, prefix)
    return MemoryStore(prefix)
