"""Running the broker's Lua scripts (`pushsvc.broker.lua`) by their SHA.

redis-py's `Script` answers NOSCRIPT with `SCRIPT LOAD`, which a Redis Cluster client sends to
every node: one node down (a failover under way) and every script of every partition fails
until the cluster forgets the node. Here a node that does not know a script yet (a fresh one,
a promoted replica) is sent the script itself (`EVAL`), on the one connection the command was
routed to, and caches it from then on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import redis
from redis.cluster import ClusterPipeline
from redis.exceptions import NoScriptError

from pushsvc.broker.lua import source
from pushsvc.broker.redis.node_batches import routed

Arg = str | int | bytes


class Script:
    """One script of `pushsvc.broker.lua` for one client."""

    def __init__(self, client: redis.Redis, name: str) -> None:
        self._client = client
        self._text = source(name)
        self._sha = hashlib.sha1(self._text.encode()).hexdigest()
        # In a pipeline (`client=`, one Redis or one node of a cluster) redis-py's own loads
        # the script on the pipeline's connection before it runs.
        self._pipelined = client.register_script(self._text)

    @property
    def sha(self) -> str:
        """The script's SHA1, by which EVALSHA names it."""
        return self._sha

    @property
    def text(self) -> str:
        """The script's source (SCRIPT LOAD, EVAL)."""
        return self._text

    def __call__(
        self,
        *,
        keys: Sequence[str] = (),
        args: Sequence[Arg] = (),
        client: redis.Redis | redis.client.Pipeline | ClusterPipeline | None = None,
    ) -> Any:
        if isinstance(client, ClusterPipeline):
            # A cluster pipeline cannot load a script first: the script goes whole (EVAL),
            # to the node of its keys' slot (`routed`).
            return client.execute_command(  # type: ignore[no-untyped-call]
                "EVAL", self._text, len(keys), *keys, *args, **routed(client, keys[0])
            )
        if client is not None:
            return self._pipelined(keys=keys, args=args, client=client)
        try:
            return self._client.evalsha(self._sha, len(keys), *keys, *args)
        except NoScriptError:
            return self._client.eval(self._text, len(keys), *keys, *args)
