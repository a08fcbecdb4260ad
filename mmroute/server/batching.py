"""Computing features of requests that arrive together in one batch.

Encoders (CLIP, sentence-transformers) cost nearly the same for 1 or 32 inputs, so a server
that encodes each request alone spends its CPU on overhead. The queue waits at most
``max_wait_s`` for company after the first request (and only while other requests are on their
way: a lone request does not wait), encodes up to ``max_batch`` at once in a
worker thread (the event loop keeps accepting requests meanwhile), and hands each caller its row.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..query import Query

Transform = Callable[[Sequence[Query]], np.ndarray]


@dataclass
class _Item:
    transform: Transform
    query: Query
    future: "asyncio.Future[np.ndarray]"


class FeatureBatcher:
    """An asyncio queue in front of ``FeaturePipeline.transform``; one batch in flight at a time.

    Requests carry the transform of the router they were routed with, so a hot reload between
    requests never mixes two routers' features in one batch.
    """

    def __init__(self, *, max_batch: int = 32, max_wait_s: float = 0.005,
                 on_batch: Callable[[int, float], None] | None = None, history: int = 1000):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task[None] | None = None
        self.batch_sizes: collections.deque[int] = collections.deque(maxlen=history)  # recent sizes, for tests and /metrics
        self._coming = 0  # requests announced (decoding their images) but not queued yet

    async def start(self) -> None:
        if self._task is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._run(), name="mmroute-feature-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def coming(self) -> None:
        """A request will ask for features soon: a batch being collected waits for it (up to max_wait_s)."""
        self._coming += 1

    def not_coming(self) -> None:
        """The announced request is here (call right before ``features``) or gave up."""
        self._coming = max(0, self._coming - 1)

    async def features(self, transform: Transform, query: Query) -> np.ndarray:
        """The ``(dim,)`` feature row of ``query``, computed in a batch with concurrent callers."""
        if self._queue is None:
            raise RuntimeError("FeatureBatcher.start() was not awaited (the server's lifespan starts it)")
        fut: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Item(transform, query, fut))
        return await fut

    async def _collect(self, first: _Item) -> list[_Item]:
        assert self._queue is not None
        items = [first]
        deadline = asyncio.get_running_loop().time() + self.max_wait_s
        while len(items) < self.max_batch:
            try:  # take what is queued already without waiting
                items.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0 or self._coming <= 0:  # nobody else is on the way: do not make this batch wait
                break
            try:
                items.append(await asyncio.wait_for(self._queue.get(), left))
            except TimeoutError:
                break
        return items

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            items = await self._collect(await self._queue.get())
            groups: dict[Transform, list[_Item]] = {}
            for it in items:  # bound methods of one pipeline are equal (and hash alike), whatever their id
                groups.setdefault(it.transform, []).append(it)
            for group in groups.values():
                live = [it for it in group if not it.future.done()]  # a caller that gave up is skipped
                if not live:
                    continue
                t0 = loop.time()
                try:
                    X = await asyncio.to_thread(live[0].transform, [it.query for it in live])
                except Exception as exc:
                    await self._one_by_one(live, exc)  # one bad query must not fail its batch-mates
                    continue
                self.batch_sizes.append(len(live))
                if self._on_batch is not None:
                    self._on_batch(len(live), loop.time() - t0)
                for i, it in enumerate(live):
                    if not it.future.done():
                        it.future.set_result(X[i])

    async def _one_by_one(self, items: list[_Item], exc: Exception) -> None:
        for it in items:
            if it.future.done():
                continue
            if len(items) == 1:
                it.future.set_exception(exc)
                continue
            try:
                it.future.set_result((await asyncio.to_thread(it.transform, [it.query]))[0])
            except Exception as own:
                if not it.future.done():
                    it.future.set_exception(own)


__all__ = ["FeatureBatcher", "Transform"]
