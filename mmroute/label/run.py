"""``mmroute label``: pairwise judgments for a user's own queries, from their own models and a judge.

Every pool model that can take a query (the routing hard filters: no image to a model without
known vision support, nothing past a context window) answers it once through ``mmroute.llm``;
a model that cannot take it has no answer and no judgment on it. The pairs to compare are
``all``, ``anchor:MODEL`` (each model against one) or ``sample:K`` (K seeded random pairs per
query); each is judged in both orders (see :mod:`mmroute.label.judge`) and written at once as a
judgment line ``source: llm-judge:<judge>``, with the query's images as data URLs so the file
trains anywhere. Or, with ``for_humans``, the answer pairs are written for people to judge.

Output is appended one complete line at a time, so it is valid whenever the run stops (budget,
Ctrl-C, a crash: a torn last line is cut on the next run). Each line's id is a hash of the query
content, the pair and the source, so a rerun on the same output skips the pairs already there.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..data.formats import Judgment, QueryRecord, dump_line
from ..errors import ConfigError, MMRouteError
from ..llm import Answer, complete
from ..llm.convert import query_to_messages
from ..payload import Payload
from ..policy import hard_filters, spec_filter_reasons
from ..pool import ModelPool, ModelSpec, resolve
from ..query import Query
from .judge import DEFAULT_RUBRIC, Verdict, check_rubric, combine, pairwise_messages, parse_verdict, to_models


@dataclass(frozen=True)
class PairPlan:
    """Which model pairs of a query get compared: ``all``, ``anchor:MODEL`` or ``sample:K``."""

    kind: Literal["all", "anchor", "sample"]
    anchor: str | None = None
    k: int = 0

    @classmethod
    def parse(cls, spec: str, pool: ModelPool) -> PairPlan:
        head, _, arg = spec.partition(":")
        if head == "all" and not arg:
            return cls("all")
        if head == "anchor" and arg:
            if arg not in pool:
                raise ConfigError(f"--pairs anchor:{arg}: no such model in the pool ({', '.join(pool.names)})")
            return cls("anchor", anchor=arg)
        if head == "sample" and arg.isdigit() and int(arg) > 0:
            return cls("sample", k=int(arg))
        raise ConfigError(f"--pairs {spec!r}: expected all, anchor:MODEL or sample:K (K a positive integer)")

    def pairs(self, models: Sequence[str], query_hash: str, seed: int) -> list[tuple[str, str]]:
        """Pairs among ``models`` (those that can take the query, in pool order)."""
        every = list(itertools.combinations(models, 2))
        if self.kind == "anchor":
            anchor = self.anchor
            return [(anchor, m) for m in models if m != anchor] if anchor is not None and anchor in models else []
        if self.kind == "sample" and self.k < len(every):
            # seeded by the query, so a rerun picks the same pairs and resume finds them done
            return sorted(random.Random(f"{seed}:{query_hash}").sample(every, self.k), key=every.index)
        return every


def pair_id(query_hash: str, a: str, b: str, source: str) -> str:
    """A line's id: the same for a pair in either orientation, so resume recognises it."""
    key = json.dumps([query_hash, *sorted((a, b)), source], separators=(",", ":"))
    return "label:" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


class Budget:
    """Spend so far and a cap: a call starts only if its expected cost, with the calls in flight,
    stays within the cap (an answer longer than expected can still pass it by one call's excess)."""

    def __init__(self, max_usd: float | None) -> None:
        if max_usd is not None and not max_usd >= 0:
            raise ConfigError(f"--max-usd must be >= 0, got {max_usd}")
        self.max_usd = max_usd
        self.spent = {"models": 0.0, "judge": 0.0}
        self.reserved = 0.0
        self.stopped = False
        self._lock = threading.Lock()

    @property
    def total(self) -> float:
        return self.spent["models"] + self.spent["judge"]

    def reserve(self, expected: float) -> bool:
        with self._lock:
            if self.max_usd is not None and (self.stopped or self.total + self.reserved + expected > self.max_usd
                                             or self.total >= self.max_usd):
                self.stopped = True
                return False
            self.reserved += expected
            return True

    def settle(self, expected: float, actual: float, what: Literal["models", "judge"]) -> None:
        with self._lock:
            self.reserved -= expected
            self.spent[what] += actual


@dataclass
class LabelReport:
    """What a run did; ``summary()`` is the command's last lines."""

    queries: int = 0
    queries_labelled: int = 0
    queries_done_before: int = 0
    queries_unlabellable: int = 0
    cannot_take: int = 0
    answers_called: int = 0
    answers_reused: int = 0
    answer_failures: int = 0
    judge_calls: int = 0
    judge_failures: int = 0
    lines_written: int = 0
    ties: int = 0
    order_agreed: int = 0
    unknown_price_calls: int = 0
    spent_models_usd: float = 0.0
    spent_judge_usd: float = 0.0
    budget_stopped: bool = False
    max_usd: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def agreement(self) -> float | None:
        """Share of judged pairs whose two orders gave the same verdict."""
        judged = self.lines_written if self.judge_calls else 0
        return self.order_agreed / judged if judged else None

    def summary(self) -> str:
        agree = f"{self.agreement:.1%}" if self.agreement is not None else "n/a"
        lines = [
            f"queries: {self.queries} read, {self.queries_labelled} labelled now, {self.queries_done_before} already "
            f"done, {self.queries_unlabellable} with fewer than two models able to take them (or the anchor/judge unable)",
            f"answers: {self.answers_called} called, {self.answers_reused} reused, {self.answer_failures} failed; "
            f"{self.cannot_take} (query, model) pairs skipped by the hard filters",
            f"judge calls: {self.judge_calls} ({self.judge_failures} failed or unparseable); lines written: "
            f"{self.lines_written}" + (f" ({self.ties} ties); judge-order agreement: {agree}" if self.judge_calls else ""),
            f"spend: {_usd(self.spent_models_usd + self.spent_judge_usd)} (models {_usd(self.spent_models_usd)}, judge "
            f"{_usd(self.spent_judge_usd)})" + (f" of --max-usd {self.max_usd:g}" if self.max_usd is not None else ""),
        ]
        if self.unknown_price_calls:
            lines.append(f"note: {self.unknown_price_calls} call(s) had no known price and count $0 (set prices in "
                         "the pool file for an honest total and budget)")
        if self.budget_stopped:
            lines.append("stopped: the budget was reached; the output is valid, and a rerun with a higher "
                         "--max-usd continues where this one stopped")
        return "\n".join(lines + self.notes)


def _usd(x: float) -> str:
    return f"${x:.4f}" if x >= 0.01 or x == 0 else f"${x:.6f}"


def _done_ids(out: Path) -> set[str]:
    """Ids already in the output; a torn last line (a killed run) is cut off first."""
    if not out.exists():
        return set()
    data = out.read_bytes()
    if data and not data.endswith(b"\n"):
        with out.open("r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)
    ids: set[str] = set()
    for line in out.read_text(encoding="utf-8").splitlines():
        try:
            got = json.loads(line)
        except ValueError:
            continue
        if isinstance(got, dict) and isinstance(got.get("id"), str):
            ids.add(got["id"])
    return ids


def _cached_answers(path: Path | None) -> dict[tuple[str, str], str]:
    if path is None or not path.exists():
        return {}
    _done_ids(path)  # cuts a torn last line
    out: dict[tuple[str, str], str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
            out[(str(rec["query_hash"]), str(rec["model"]))] = str(rec["text"])
        except (ValueError, KeyError, TypeError):
            continue
    return out


class _Sink:
    """Appends whole lines under a lock, flushed at once (a stop never leaves half a record)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("a", encoding="utf-8", newline="\n")
        self._lock = threading.Lock()

    def write(self, item: Judgment | dict[str, Any]) -> None:
        line = dump_line(item) + "\n"
        with self._lock:
            self._fh.write(line)
            self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def judge_spec(judge: str, *, judge_pool: ModelPool | None, pool: ModelPool) -> ModelSpec:
    """The judge's facts and call parameters: its ``judge_pool`` entry, else its entry in the pool, else LiteLLM's."""
    for p in (judge_pool, pool):
        if p is not None and judge in p:
            return p[judge]
    return resolve(ModelSpec(name=judge), require_prices=False)


class Labeler:
    """One labelling run over a list of queries (see the module docstring)."""

    def __init__(self, pool: ModelPool, out: str | Path, *, judge: ModelSpec | None = None, pairs: str = "all",
                 rubric: str = DEFAULT_RUBRIC, max_usd: float | None = None, concurrency: int = 4, seed: int = 0,
                 answers_out: str | Path | None = None, timeout: float | None = 120.0, max_retries: int = 2,
                 **call_kwargs: Any) -> None:
        if concurrency < 1:
            raise ConfigError(f"--concurrency must be >= 1, got {concurrency}")
        self.pool = pool
        self.out = Path(out)
        self.judge = judge
        self.judge_pool = ModelPool(models=(judge,)) if judge is not None else None
        self.source = f"llm-judge:{judge.name}" if judge is not None else "for-humans"
        self.plan = PairPlan.parse(pairs, pool)
        self.rubric = check_rubric(rubric)
        self.budget = Budget(max_usd)
        self.concurrency = concurrency
        self.seed = seed
        self.answers_out = Path(answers_out) if answers_out is not None else None
        self.call_kwargs: dict[str, Any] = {"timeout": timeout, "max_retries": max_retries, **call_kwargs}
        self.report = LabelReport(max_usd=max_usd)
        self._lock = threading.Lock()

    def _count(self, **add: int) -> None:
        with self._lock:
            for k, v in add.items():
                setattr(self.report, k, getattr(self.report, k) + v)

    def _note(self, line: str) -> None:
        """A line for the summary (the first few distinct ones)."""
        with self._lock:
            if line not in self.report.notes and len(self.report.notes) < 6:
                self.report.notes.append(line)

    # -- calls ----------------------------------------------------------------------------------
    def _call(self, messages: list[dict[str, Any]], spec: ModelSpec, pool: ModelPool,
              what: Literal["models", "judge"], **kw: Any) -> Answer | None:
        """One model call within the budget; None when the budget refuses it or the call fails."""
        payload = Payload.from_messages(messages)
        expected = spec.expected_cost(payload.text_tokens, payload.n_images)
        if not self.budget.reserve(expected):
            return None
        cost = 0.0
        try:
            ans = complete(messages, [spec.name], pool=pool, **self.call_kwargs, **kw)
            cost = ans.total_cost_usd
            if not ans.cost_known:
                self._count(unknown_price_calls=1)
            return ans
        except MMRouteError as exc:
            cost = float(sum(a.cost_usd for a in getattr(exc, "attempts", None) or []))
            self._note(f"failed: {spec.name}: {str(exc).splitlines()[0][:300]}")
            return None
        finally:
            self.budget.settle(expected, cost, what)

    def _judge_pair(self, q: Query, a: str, b: str, ans: dict[str, str]) -> Judgment | None:
        assert self.judge is not None and self.judge_pool is not None
        verdicts: list[Verdict] = []
        for a_first in (True, False):
            first, second = (ans[a], ans[b]) if a_first else (ans[b], ans[a])
            got = self._call(pairwise_messages(q, first, second, rubric=self.rubric), self.judge, self.judge_pool,
                             "judge", temperature=0.0, drop_params=True)
            if got is None and self.budget.stopped:
                return None
            self._count(judge_calls=1)
            if got is None:
                self._count(judge_failures=1)
                return None
            v = parse_verdict(got.text)
            if v is None:
                self._count(judge_failures=1)
                self._note(f"unparseable judge reply (no [[A]] / [[B]] / [[TIE]]): {' '.join(got.text.split())[:160]!r}")
                return None
            verdicts.append(to_models(v, a_first=a_first))
        winner, agreed = combine(verdicts[0], verdicts[1])
        return Judgment(query=QueryRecord.from_query(q), model_a=a, model_b=b, winner=winner, source=self.source,
                        id=pair_id(q.content_hash, a, b, self.source), timestamp=time.time(),
                        query_hash=q.content_hash, orders={"a_first": verdicts[0], "b_first": verdicts[1]},
                        order_agreement=agreed)

    # -- one query ------------------------------------------------------------------------------
    def _label(self, q: Query, done: set[str], cache: dict[tuple[str, str], str],
               sinks: dict[str, _Sink]) -> None:
        if self.budget.stopped:
            return
        h = q.content_hash
        messages = query_to_messages(q)
        payload = Payload.from_messages(messages)
        blocked = hard_filters(self.pool, text_tokens=payload.text_tokens, n_images=payload.n_images)
        self._count(cannot_take=len(blocked))
        able = [m for m in self.pool.names if m not in blocked]
        pairs = self.plan.pairs(able, h, self.seed)
        judge_why = spec_filter_reasons(self.judge, text_tokens=payload.text_tokens,
                                        n_images=payload.n_images) if self.judge is not None else []
        if judge_why and pairs:  # a judge that cannot see the images cannot compare answers about them
            self._note(f"the judge cannot take some queries ({'; '.join(judge_why)}): they get no judgments")
            pairs = []
        if not pairs:
            self._count(queries_unlabellable=1)
            return
        todo = [(a, b) for a, b in pairs if pair_id(h, a, b, self.source) not in done]
        if not todo:
            self._count(queries_done_before=1)
            return
        answers: dict[str, str] = {}
        for m in dict.fromkeys(x for p in todo for x in p):
            if (h, m) in cache:
                answers[m] = cache[(h, m)]
                self._count(answers_reused=1)
                continue
            got = self._call(messages, self.pool[m], self.pool, "models")
            if got is None:
                if self.budget.stopped:
                    return
                self._count(answer_failures=1)
                continue
            answers[m] = got.text
            self._count(answers_called=1)
            if "answers" in sinks:
                sinks["answers"].write({"query_hash": h, "model": m, "text": got.text, "cost_usd": got.total_cost_usd,
                                        "query": QueryRecord.from_query(q).model_dump(mode="json")})
        wrote = 0
        for a, b in todo:
            if a not in answers or b not in answers or self.budget.stopped:
                continue
            if self.judge is None:
                sinks["out"].write({"id": pair_id(h, a, b, self.source), "query": QueryRecord.from_query(q).model_dump(
                    mode="json"), "query_hash": h, "model_a": a, "answer_a": answers[a], "model_b": b,
                    "answer_b": answers[b]})
                wrote += 1
                continue
            j = self._judge_pair(q, a, b, answers)
            if j is not None:
                sinks["out"].write(j)
                wrote += 1
                self._count(ties=int(j.winner == "tie"), order_agreed=int(bool((j.model_extra or {}).get("order_agreement"))))
        self._count(lines_written=wrote, queries_labelled=int(wrote > 0))

    # -- the run --------------------------------------------------------------------------------
    def run(self, queries: Sequence[Query], *, progress: bool = False) -> LabelReport:
        from tqdm.auto import tqdm

        unique = list({q.content_hash: q for q in queries}.values())
        self.report.queries = len(unique)
        done = _done_ids(self.out)
        cache = _cached_answers(self.answers_out)
        sinks = {"out": _Sink(self.out)}
        if self.answers_out is not None:
            sinks["answers"] = _Sink(self.answers_out)
        bar = tqdm(total=len(unique), desc="labelling", unit="query", disable=not progress)
        ex = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="mmroute-label")
        try:
            futures = [ex.submit(self._label, q, done, cache, sinks) for q in unique]
            for fut in as_completed(futures):
                fut.result()
                bar.update(1)
                bar.set_postfix_str(f"${self.budget.total:.4f}", refresh=False)
        except BaseException:  # Ctrl-C or a bug: queries in flight start no further call
            self.budget.stopped = True
            raise
        finally:
            ex.shutdown(wait=True, cancel_futures=True)
            bar.close()
            for s in sinks.values():
                s.close()
        self.report.spent_models_usd = self.budget.spent["models"]
        self.report.spent_judge_usd = self.budget.spent["judge"]
        self.report.budget_stopped = self.budget.stopped
        return self.report


def label(queries: Sequence[Query], pool: ModelPool, out: str | Path, *, judge: str | None = None,
          judge_pool: ModelPool | None = None, progress: bool = False, **kwargs: Any) -> LabelReport:
    """Label ``queries`` with ``pool``'s models and ``judge`` (None: answer pairs for humans) into ``out``.

    ``kwargs`` are :class:`Labeler`'s (``pairs``, ``rubric``, ``max_usd``, ``concurrency``, ``seed``,
    ``answers_out``, ...). The judgments read with :func:`mmroute.data.formats.read_judgments`."""
    spec = judge_spec(judge, judge_pool=judge_pool, pool=pool) if judge is not None else None
    return Labeler(pool, out, judge=spec, **kwargs).run(queries, progress=progress)

