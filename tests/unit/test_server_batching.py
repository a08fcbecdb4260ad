"""The feature batching queue on its own (no HTTP): batches, waits only when worth it, isolates errors."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from mmroute.query import Query
from mmroute.server.batching import FeatureBatcher


class Recorder:
    def __init__(self, fail_on: str | None = None):
        self.batches: list[list[str]] = []
        self.fail_on = fail_on

    def transform(self, queries):
        texts = [q.text for q in queries]
        self.batches.append(texts)
        if self.fail_on is not None and self.fail_on in texts:
            raise ValueError(f"cannot encode {self.fail_on}")
        return np.array([[float(len(t))] for t in texts], dtype=np.float32)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_concurrent_queries_share_a_batch_and_get_their_own_rows():
    rec = Recorder()

    async def main():
        b = FeatureBatcher(max_batch=8, max_wait_s=0.05)
        await b.start()
        qs = [Query.build("x" * (i + 1)) for i in range(20)]
        rows = await asyncio.gather(*[b.features(rec.transform, q) for q in qs])
        await b.stop()
        return rows, list(b.batch_sizes)

    rows, sizes = run(main())
    assert [float(r[0]) for r in rows] == [float(i + 1) for i in range(20)]
    assert sizes == [8, 8, 4] and all(len(batch) <= 8 for batch in rec.batches)


def test_a_lone_query_does_not_wait_for_company():
    rec = Recorder()

    async def main():
        b = FeatureBatcher(max_batch=8, max_wait_s=2.0)
        await b.start()
        t0 = time.perf_counter()
        await b.features(rec.transform, Query.build("alone"))
        lone = time.perf_counter() - t0
        b.coming()  # a second request is on its way: the batch waits for it
        t0 = time.perf_counter()

        async def late():
            await asyncio.sleep(0.1)
            b.not_coming()
            return await b.features(rec.transform, Query.build("late"))

        await asyncio.gather(b.features(rec.transform, Query.build("early")), late())
        waited = time.perf_counter() - t0
        await b.stop()
        return lone, waited

    lone, waited = run(main())
    assert lone < 1.0  # not max_wait_s = 2 s
    assert rec.batches[-1] == ["early", "late"] and waited < 2.0


def test_one_bad_query_does_not_fail_its_batch_mates():
    rec = Recorder(fail_on="bad")

    async def main():
        b = FeatureBatcher(max_batch=8, max_wait_s=0.05)
        await b.start()
        res = await asyncio.gather(*[b.features(rec.transform, Query.build(t)) for t in ("ok1", "bad", "ok22")],
                                   return_exceptions=True)
        await b.stop()
        return res

    ok1, bad, ok2 = run(main())
    assert float(ok1[0]) == 3.0 and float(ok2[0]) == 4.0
    assert isinstance(bad, ValueError) and "bad" in str(bad)


def test_features_before_start_is_a_clear_error():
    async def main():
        await FeatureBatcher().features(Recorder().transform, Query.build("x"))

    with pytest.raises(RuntimeError, match="start"):
        run(main())
