"""Importers: public preference/benchmark datasets -> mmroute judgments or outcomes JSONL.

Each importer reads one dataset layout (the folder as published, or one of its files) and returns
an :class:`ImportResult`; ``run_import`` (what ``mmroute import --format FMT SOURCE --out FILE``
calls) writes it atomically. Importers are lenient by default: a bad record is skipped and
reported with its file and line/row, never silently dropped; ``strict=True`` raises on the first.
Images are referenced by absolute path where they lie (nothing is copied).
"""

from __future__ import annotations

import ast
import csv
import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from ..errors import DataFormatError
from .formats import DataLineError, Judgment, Outcome, QueryRecord, _classify, write_jsonl

csv.field_size_limit(1 << 30)  # RouterBench/RouteLLM rows hold whole model responses


@dataclass
class ImportResult:
    """Records an importer produced, the records it skipped (with why), and what it dropped on purpose."""

    kind: Literal["judgments", "outcomes"]
    items: list[Judgment] | list[Outcome]
    errors: list[DataLineError] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)  # deliberate drops, e.g. {"contaminated": 5}
    sources: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{len(self.items)} {self.kind}"]
        if self.dropped:
            parts.append("dropped " + ", ".join(f"{n} {why}" for why, n in sorted(self.dropped.items())))
        if self.errors:
            kinds: dict[str, int] = {}
            for e in self.errors:
                kinds[e.kind] = kinds.get(e.kind, 0) + 1
            parts.append(f"{len(self.errors)} bad records skipped ("
                         + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) + f"); first: {self.errors[0]}")
        return "; ".join(parts)

    def write(self, out: str | Path) -> int:
        return write_jsonl(out, self.items)


class _Collector:
    """Builds records one source row at a time, turning validation failures into located errors."""

    def __init__(self, kind: Literal["judgments", "outcomes"], strict: bool):
        self.result = ImportResult(kind=kind, items=[])
        self.strict = strict
        self._ids: dict[str, str] = {}

    def error(self, kind: str, msg: str, path: Path, line: int | None) -> None:
        err = DataLineError(msg, kind=kind, path=str(path), line=line)
        if self.strict:
            raise err
        self.result.errors.append(err)

    def add(self, model: type[Judgment] | type[Outcome], data: dict[str, Any], path: Path, line: int | None) -> None:
        try:
            item = model.model_validate(data)
        except ValidationError as exc:
            self.error(*_classify(exc), path, line)
            return
        if item.id is not None:
            where = f"{path}:{line}"
            if item.id in self._ids:
                self.error("duplicate_id", f"duplicate id {item.id!r} (first at {self._ids[item.id]})", path, line)
                return
            self._ids[item.id] = where
        self.result.items.append(item)  # type: ignore[arg-type]

    def drop(self, why: str) -> None:
        self.result.dropped[why] = self.result.dropped.get(why, 0) + 1


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(row number as the line it starts on, row) — multi-line cells make line numbers matter."""
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        _ = reader.fieldnames  # consumes the header, so line numbers below are the rows' own
        start = reader.line_num + 1
        for row in reader:
            yield start, row
            start = reader.line_num + 1


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataFormatError(f"{what} not found", path=str(path))
    return path


# --------------------------------------------------------------------------- arena


def _first_user_text(conv: Any) -> tuple[str, list[str]]:
    """Text and image URLs of the first user turn of an OpenAI-style conversation."""
    if not isinstance(conv, list):
        return "", []
    for turn in conv:
        if isinstance(turn, dict) and turn.get("role") in ("user", "human"):
            content = turn.get("content")
            if isinstance(content, str):
                return content, []
            texts, imgs = [], []
            for part in content or []:
                if isinstance(part, str):
                    texts.append(part)
                elif isinstance(part, dict) and part.get("type") == "text":
                    texts.append(str(part.get("text", "")))
                elif isinstance(part, dict) and part.get("type") == "image_url":
                    url = part.get("image_url")
                    url = url.get("url") if isinstance(url, dict) else url
                    if isinstance(url, str):
                        imgs.append(url)
            return "\n".join(texts), imgs
    return "", []


def _arena_prompt(rec: dict[str, Any]) -> tuple[str, list[str]]:
    for key in ("conversation_a", "conversation"):
        if key in rec:
            text, imgs = _first_user_text(rec[key])
            if text or imgs:
                return text, imgs
    for key in ("prompt", "question", "instruction"):
        v = rec.get(key)
        if isinstance(v, str) and v.startswith("[") and v.endswith("]"):  # arena-55k stores JSON lists as text
            try:
                v = json.loads(v)
            except json.JSONDecodeError:
                pass
        if isinstance(v, list) and v:
            v = v[0]
        if isinstance(v, str) and v.strip():
            return v, []
    return "", []


def _arena_winner(rec: dict[str, Any]) -> Any:
    if "winner" in rec:
        return rec["winner"]
    flags = {k: str(rec.get(f"winner_{k}", "0")).strip() in ("1", "1.0", "True", "true")
             for k in ("model_a", "model_b", "tie")}
    if sum(flags.values()) == 1:
        return next(k for k, v in flags.items() if v)
    return None


def _arena_records(path: Path) -> Iterator[tuple[int | None, Any]]:
    if path.suffix == ".jsonl":
        with open(path, "rb") as fh:
            for i, raw in enumerate(fh, start=1):
                if raw.strip():
                    try:
                        yield i, json.loads(raw)
                    except json.JSONDecodeError as exc:
                        yield i, DataLineError(f"malformed JSON: {exc}", kind="malformed_json", path=str(path), line=i)
    elif path.suffix == ".csv":
        yield from _csv_rows(path)
    else:
        try:
            data = json.loads(path.read_bytes())
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"malformed JSON: {exc}", path=str(path)) from None
        if isinstance(data, dict):
            data = data.get("battles") or data.get("data") or [data]
        for i, rec in enumerate(data):
            yield i, rec  # "line" is the record index for a JSON array


def import_arena(source: str | Path, *, strict: bool = False) -> ImportResult:
    """Chatbot-Arena battles (JSON array, JSONL or the arena-55k CSV) -> judgments.

    The query is the first user turn (``conversation_a``, else ``prompt`` / ``question``); later
    turns are not routed. Winners: ``model_a``, ``model_b``, ``tie``, ``tie (bothbad)`` (or the 55k
    set's one-hot ``winner_model_a`` / ``winner_model_b`` / ``winner_tie`` columns).
    """
    source = _need(Path(source), "arena source")
    files = sorted(p for ext in ("*.json", "*.jsonl", "*.csv") for p in source.glob(ext)) if source.is_dir() else [source]
    col = _Collector("judgments", strict)
    for path in files:
        col.result.sources.append(path)
        for line, rec in _arena_records(path):
            if isinstance(rec, DataLineError):
                col.error(rec.kind, rec.detail, path, line)
                continue
            if not isinstance(rec, dict):
                col.error("malformed_json", f"expected a battle object, got {type(rec).__name__}", path, line)
                continue
            text, imgs = _arena_prompt(rec)
            rid = rec.get("id", rec.get("question_id"))
            ts = rec.get("tstamp", rec.get("timestamp"))
            col.add(Judgment, {
                "query": {"text": text, "images": imgs}, "model_a": rec.get("model_a"), "model_b": rec.get("model_b"),
                "winner": _arena_winner(rec), "id": f"arena:{rid}" if rid not in (None, "") else None,
                "source": str(rec.get("source") or "arena"), "timestamp": ts if ts not in ("", None) else None,
            }, path, line)
    return col.result


# --------------------------------------------------------------------------- mllm-bench

_MLLM_VERDICT = {"Answer1": "model_a", "Answer2": "model_b",
                 "unable to decide: situation one": "tie",            # close-ended, both right or both wrong
                 "unable to decide: situation two": "tie (bothbad)"}  # both with considerable errors


def import_mllm_bench(source: str | Path, *, strict: bool = False) -> ImportResult:
    """MLLM-Bench pairwise votes -> image+text judgments.

    ``model_1`` (shown first to the judge) becomes ``model_a``; both answer orders are kept as
    separate judgments. Votes on a question whose image is missing are *skipped and reported*
    (``missing_image``): the judge saw the image, so a text-only copy would teach the router a
    query it never judged. Image paths are absolute paths into the dataset folder.
    """
    source = Path(source)
    root = source.parent.parent if source.is_file() else source
    votes = _need(source if source.is_file() else root / "derived" / "pairwise_votes.csv", "pairwise_votes.csv")
    qpath = _need(root / "data" / "questions.json", "questions.json")
    questions = {int(q["id"]): q for q in json.loads(qpath.read_text(encoding="utf-8"))}
    col = _Collector("judgments", strict)
    col.result.sources += [votes, qpath]
    for line, row in _csv_rows(votes):
        try:
            qid = int(row["question_id"])
        except (KeyError, TypeError, ValueError):
            col.error("invalid_field", f"question_id {row.get('question_id')!r} is not an integer", votes, line)
            continue
        q = questions.get(qid)
        if q is None:
            col.error("invalid_field", f"question_id {qid} is not in {qpath}", votes, line)
            continue
        image = (root / str(q["image_path"])).resolve()
        if not image.is_file():
            col.error("missing_image", f"image of question {qid} not found: {image}", votes, line)
            continue
        verdict = (row.get("verdict") or "").strip()
        winner = _MLLM_VERDICT.get(verdict)
        if winner is None:
            col.error("unknown_winner", f"unknown verdict {verdict!r}", votes, line)
            continue
        m1, m2 = row.get("model_1"), row.get("model_2")
        named = row.get("winner", "")
        expected = {"model_a": m1, "model_b": m2}.get(winner, f"tie:{verdict}")
        if named and named != expected and not (winner.startswith("tie") and named.startswith("tie")):
            col.error("invalid_field", f"winner column {named!r} contradicts verdict {verdict!r}", votes, line)
            continue
        meta = q.get("meta") or {}
        col.add(Judgment, {
            "query": {"text": q["question"], "images": [str(image)]}, "model_a": m1, "model_b": m2, "winner": winner,
            "id": f"mllm-bench:{qid}:{row.get('order')}:{m1}:{m2}", "source": f"mllm-bench/{row.get('judge')}",
            "meta": {"level": meta.get("level"), "capability": meta.get("capability"),
                     "question_type": meta.get("question type")},
        }, votes, line)
    return col.result


# --------------------------------------------------------------------------- RouteLLM

ROUTELLM_MODELS = ("gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1")


def _contaminated(folder: Path) -> set[str]:
    path = folder / "contaminated_prompts.jsonl"
    if not path.is_file():
        return set()
    with open(path, encoding="utf-8") as fh:
        return {json.loads(line)["eval_prompt"] for line in fh if line.strip()}


def _bool_score(v: str | None) -> float | None:
    return {"True": 1.0, "False": 0.0, "true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0,
            "1.0": 1.0, "0.0": 0.0}.get((v or "").strip())


def _routellm(files: list[Path], folder: Path, bench: str, strict: bool) -> ImportResult:
    """Shared by MMLU and GSM8K: per-model correctness -> 1/0 outcomes, contaminated prompts dropped
    (exactly as RouteLLM's evaluation does: by exact prompt match)."""
    banned = _contaminated(folder)
    col = _Collector("outcomes", strict)
    for path in files:
        col.result.sources.append(path)
        stem = path.stem.removeprefix("mmlu_") if bench == "mmlu" else bench
        for idx, (line, row) in enumerate(_csv_rows(path)):
            prompt = row.get("prompt")
            if prompt in banned:
                col.drop("contaminated")
                continue
            scores = {}
            for m in ROUTELLM_MODELS:
                s = _bool_score(row.get(m))
                if s is None:
                    col.error("invalid_field", f"column {m!r} is {row.get(m)!r}, expected True/False", path, line)
                    break
                scores[m] = s
            else:
                col.add(Outcome, {"query": {"text": prompt or ""}, "scores": scores,
                                  "id": f"routellm-{bench}:{stem}:{idx}", "source": f"routellm/{bench}/{stem}"}, path, line)
    return col.result


def import_routellm_mmlu(source: str | Path, *, strict: bool = False) -> ImportResult:
    """RouteLLM MMLU responses (57 subject CSVs) -> outcomes (1 correct / 0 wrong per model)."""
    source = _need(Path(source), "RouteLLM MMLU source")
    if source.is_file():
        folder = source.parent.parent if source.parent.name == "responses" else source.parent
        files = [source]
    else:
        folder = source / "mmlu" if (source / "mmlu").is_dir() else source
        files = sorted((folder / "responses").glob("mmlu_*.csv"))
        if not files:
            raise DataFormatError("no responses/mmlu_*.csv files", path=str(folder))
    return _routellm(files, folder, "mmlu", strict)


def import_routellm_gsm8k(source: str | Path, *, strict: bool = False) -> ImportResult:
    """RouteLLM GSM8K responses -> outcomes (1 correct / 0 wrong per model)."""
    source = _need(Path(source), "RouteLLM GSM8K source")
    if source.is_file():
        folder, files = source.parent, [source]
    else:
        folder = source / "gsm8k" if (source / "gsm8k").is_dir() else source
        files = [_need(folder / "gsm8k_responses.csv", "gsm8k_responses.csv")]
    return _routellm(files, folder, "gsm8k", strict)


# --------------------------------------------------------------------------- RouterBench


def _routerbench_prompt(raw: str) -> str:
    """RouterBench stores prompts as a Python list literal of turns; keep the text of all turns."""
    raw = raw or ""
    if raw.startswith("[") and raw.endswith("]"):
        try:
            v = ast.literal_eval(raw)
            if isinstance(v, list) and all(isinstance(x, str) for x in v):
                return "\n\n".join(v)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            pass
    return raw


def import_routerbench(source: str | Path, *, strict: bool = False) -> ImportResult:
    """RouterBench CSVs -> outcomes with each model's score and its real per-query cost (USD).

    Models are the columns that have a ``<model>|total_cost`` companion; a model whose score cell
    is empty is left out of that outcome (counted in ``dropped``). A few sample ids occur on two
    rows (different models filled in), so ids carry the CSV's row index. SOURCE may be the
    dataset folder (every ``routerbench_*/*.csv`` under it) or one CSV.
    """
    source = _need(Path(source), "RouterBench source")
    if source.is_file():
        files = [source]
    else:
        files = sorted(source.glob("**/routerbench_*/*.csv")) or sorted(source.glob("*.csv"))
        if not files:
            raise DataFormatError("no routerbench_*/*.csv files found", path=str(source))
    col = _Collector("outcomes", strict)
    for path in files:
        col.result.sources.append(path)
        split = f"{path.parent.name}/{path.stem}"
        with open(path, encoding="utf-8", newline="") as fh:
            header = next(csv.reader(fh), [])
        models = [c for c in header if "|" not in c and f"{c}|total_cost" in header]
        if not models:
            raise DataFormatError("no '<model>|total_cost' columns: not a RouterBench CSV", path=str(path))
        for line, row in _csv_rows(path):
            scores, costs, bad = {}, {}, None
            for m in models:
                raw_s, raw_c = (row.get(m) or "").strip(), (row.get(f"{m}|total_cost") or "").strip()
                try:
                    s_ = float(raw_s) if raw_s else math.nan
                    c_ = float(raw_c) if raw_c else math.nan
                except ValueError:
                    bad = f"model {m!r}: score {raw_s!r} / cost {raw_c!r} are not numbers"
                    break
                if math.isnan(s_):  # this model has no result on this query (a few cells are empty)
                    col.drop("empty model scores")
                    continue
                scores[m] = s_
                if not math.isnan(c_):
                    costs[m] = c_
            if bad:
                col.error("invalid_field", bad, path, line)
                continue
            col.add(Outcome, {"query": {"text": _routerbench_prompt(row.get("prompt", ""))}, "scores": scores,
                              "costs": costs, "id": f"routerbench:{split}:{row.get('sample_id')}:{row.get('') or line}",
                              "source": f"routerbench/{row.get('eval_name') or path.stem}"}, path, line)
    return col.result


# --------------------------------------------------------------------------- AlpacaEval


def import_alpaca_eval(source: str | Path, *, strict: bool = False) -> ImportResult:
    """AlpacaEval annotations -> text judgments.

    ``preference`` is in [1, 2]: below 1.5 generator_1 (model_a) wins, above 1.5 generator_2,
    exactly 1.5 is a tie. A decisive judgment weighs ``2*|preference-1.5|`` (so a 1.05 is a near-sure
    win and a 1.45 nearly a coin flip). Values outside [1, 2] (the file has some 0.0) are reported.
    """
    source = _need(Path(source), "AlpacaEval source")
    folder = source.parent if source.is_file() else source
    ann = source if source.is_file() else _need(folder / "annotations_compact.csv", "annotations_compact.csv")
    instr_path = _need(folder / "instructions.jsonl", "instructions.jsonl")
    with open(instr_path, encoding="utf-8") as fh:
        # one shared QueryRecord per instruction: pydantic reuses it instead of re-validating 108k times
        instructions = {int(r["instruction_idx"]): QueryRecord(text=r["instruction"])
                        for r in map(json.loads, filter(str.strip, fh))}
    col = _Collector("judgments", strict)
    col.result.sources += [ann, instr_path]
    for line, row in _csv_rows(ann):
        try:
            pref = float(row.get("preference") or "nan")
            idx = int(row["instruction_idx"])
        except (KeyError, ValueError):
            col.error("invalid_field", f"preference {row.get('preference')!r} / instruction_idx not numeric", ann, line)
            continue
        if not 1.0 <= pref <= 2.0:  # also false for NaN
            col.error("unknown_winner", f"preference {row.get('preference')!r} is outside [1, 2]", ann, line)
            continue
        if idx not in instructions:
            col.error("invalid_field", f"instruction_idx {idx} is not in {instr_path}", ann, line)
            continue
        winner = "model_a" if pref < 1.5 else "model_b" if pref > 1.5 else "tie"
        weight = 1.0 if winner == "tie" else round(2 * abs(pref - 1.5), 6)
        col.add(Judgment, {"query": instructions[idx], "model_a": row.get("generator_1"),
                           "model_b": row.get("generator_2"), "winner": winner, "weight": weight,
                           "id": f"alpaca-eval:{line}", "source": f"alpaca-eval/{row.get('annotator')}"}, ann, line)
    return col.result


# --------------------------------------------------------------------------- registry

Importer = Callable[..., ImportResult]

#: format name (``mmroute import --format``) -> importer ``fn(source, *, strict=False) -> ImportResult``
IMPORTERS: dict[str, Importer] = {
    "arena": import_arena,
    "mllm-bench": import_mllm_bench,
    "routellm-mmlu": import_routellm_mmlu,
    "routellm-gsm8k": import_routellm_gsm8k,
    "routerbench": import_routerbench,
    "alpaca-eval": import_alpaca_eval,
}


def run_import(fmt: str, source: str | Path, out: str | Path, *, strict: bool = False) -> ImportResult:
    """Import ``source`` in format ``fmt`` and write ``out`` (JSONL, atomically)."""
    try:
        importer = IMPORTERS[fmt]
    except KeyError:
        raise DataFormatError(f"unknown import format {fmt!r}; choose one of: {', '.join(IMPORTERS)}") from None
    result = importer(source, strict=strict)
    result.write(out)
    return result


def accuracies(outcomes: Iterable[Outcome]) -> dict[str, float]:
    """Mean score per model (the single-model baselines a router must beat)."""
    tot: dict[str, float] = {}
    n: dict[str, int] = {}
    for o in outcomes:
        for m, s in o.scores.items():
            tot[m] = tot.get(m, 0.0) + s
            n[m] = n.get(m, 0) + 1
    return {m: tot[m] / n[m] for m in tot}
