"""Node factories: router, parse, plan, generate, verify, finalize and feedback.

Each factory closes over the long-lived objects (router, pool, verifier, store) and returns a node
that reads and writes only JSON-able state, so graphs built from them checkpoint and resume
anywhere. Factories take a ``Router`` or a ``LiveRouter`` (which swaps in a retrained router
between calls); nodes always ask it for the current one. What the cascade decides (escalate to
whom, what an escalation or a rating teaches) is ``mmroute.cascade``; the nodes adapt it to state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langgraph.types import Command, Overwrite, interrupt

from ..cascade import (RATINGS, WINNERS, Rating, answer_from_state, answer_state, best_answer,
                       escalation_judgments, judgment_id, next_step, parse_feedback, rating_judgment, user_turn,
                       verdict_state, verified, within_budget)
from ..constraints import Constraints
from ..data.store import FeedbackStore
from ..errors import ConfigError, InvalidInputError, ProviderConfigError, ProviderError
from ..policy import RouteDecision
from ..pool import ModelPool
from ..query import Query
from ..router import LiveRouter, Router, current_router
from ..verify.base import Verifier
from .state import AnswerState, AttemptState, decision_from_state, decision_to_state, query_state

GotoSpec = Mapping[str, str] | Callable[[RouteDecision], str]
#: what the LangGraph pieces take: a ``Router``, or a ``LiveRouter`` that swaps in retrained versions
RouterLike: TypeAlias = Router | LiveRouter


# -- helpers ------------------------------------------------------------------------------------


def latest_query(state: Mapping[str, Any], router: RouterLike | None = None, *, include_context: bool = False) -> Query:
    """The query to route: the last user turn (text + images) of ``state["messages"]``."""
    messages = state.get("messages") if isinstance(state, Mapping) else None
    if not messages:
        raise InvalidInputError("the state has no messages to route (expected a 'messages' list with a user turn)")
    kwargs: dict[str, Any] = {"include_context": include_context}
    policy = getattr(current_router(router), "image_policy", None) if router is not None else None
    if policy is not None:
        kwargs["image_policy"] = policy
    return Query.from_messages(messages, **kwargs)


def route_state(router: RouterLike, state: Mapping[str, Any], *, include_context: bool = False,
                constraints: Constraints | None = None) -> RouteDecision:
    """Route ``state["messages"]``: features from the latest user turn (or all, with
    ``include_context``), hard filters over every message the model will be sent."""
    messages = state.get("messages") if isinstance(state, Mapping) else None
    if not messages:
        raise InvalidInputError("the state has no messages to route (expected a 'messages' list with a user turn)")
    return current_router(router).route(list(messages), include_context=include_context, constraints=constraints)


def thread_id(config: RunnableConfig | None) -> str:
    return str(((config or {}).get("configurable") or {}).get("thread_id") or "")


def attempt_record(attempt: Any, step: int) -> AttemptState:
    """One attempt of ``mmroute.llm`` (a model object, dataclass or dict) as a plain dict."""
    if hasattr(attempt, "model_dump"):
        raw = attempt.model_dump(mode="json")
    elif isinstance(attempt, Mapping):
        raw = dict(attempt)
    else:
        raw = {k: getattr(attempt, k) for k in ("model", "ok", "error", "cost_usd", "latency_s") if hasattr(attempt, k)}
    error = raw.get("error")
    ok = raw.get("ok")
    if ok is None:
        ok = raw.get("success", error is None)
    out: AttemptState = {"model": str(raw.get("model", "")), "ok": bool(ok), "step": step,
                          "error": None if error is None else str(error), "error_type": raw.get("error_type")}
    for key in ("cost_usd", "latency_s"):
        value = raw.get(key)
        if isinstance(value, (int, float)):
            out[key] = float(value)
    return out


def _answer_attempts(answer: Any, step: int) -> list[AttemptState]:
    attempts = [attempt_record(a, step) for a in getattr(answer, "attempts", None) or []]
    if not any(a["ok"] and a["model"] == answer.model for a in attempts):  # a backend may list only failures
        attempts.append({"model": str(answer.model), "ok": True, "error": None, "step": step,
                         "cost_usd": float(getattr(answer, "cost_usd", 0.0) or 0.0),
                         "latency_s": float(getattr(answer, "latency_s", 0.0) or 0.0)})
    return attempts


# -- router node --------------------------------------------------------------------------------


def _check_goto(goto: GotoSpec | None, pool: ModelPool) -> None:
    if goto is None or callable(goto):
        return
    if not isinstance(goto, Mapping) or not goto:
        raise ConfigError("goto must be a non-empty mapping {model or tag: node} or a callable(decision) -> node")
    tags = {t for m in pool.models for t in m.tags}
    unknown = [k for k in goto if k not in pool and k not in tags and k != "*"]
    if unknown:
        raise ConfigError(f"goto keys {', '.join(map(repr, unknown))} name neither a pool model ({', '.join(pool.names)}) "
                          f"nor a tag ({', '.join(sorted(tags)) or 'none'}); use '*' for a default")


def resolve_goto(goto: GotoSpec, decision: RouteDecision, pool: ModelPool) -> str:
    """The node for a decision: by model name, then by the model's tags (tiers), then ``'*'``."""
    if callable(goto) and not isinstance(goto, Mapping):
        return goto(decision)
    if decision.model in goto:
        return goto[decision.model]
    spec = pool[decision.model] if decision.model in pool else None
    for tag in spec.tags if spec is not None else ():
        if tag in goto:
            return goto[tag]
    if "*" in goto:
        return goto["*"]
    raise ConfigError(f"goto has no node for model {decision.model!r} (nor its tags, nor '*')")


def create_router_node(router: RouterLike, *, goto: GotoSpec | None = None, include_context: bool = False,
                       key: str = "route", constraints: Constraints | None = None
                       ) -> Callable[[dict[str, Any]], dict[str, Any] | Command]:
    """A node that routes the latest user turn and stores the decision under ``state[key]``.

    The vision / context / cost filters see the whole conversation (an image three turns back
    still rules out text-only models), whatever ``include_context`` says about the features.

    With ``goto`` the node returns ``Command(goto=node)``: a mapping ``{model or tag: node}``
    (tags are a model's ``tags`` in the pool, e.g. tiers like ``"cheap"``; ``"*"`` is the
    default) or a callable ``decision -> node``. Add the node with ``destinations=`` to draw it.
    ``constraints`` limits every decision (cost cap, quality floor, required tags, exclusions).

    Args:
        router: a ``Router`` or ``LiveRouter``.
        goto: ``{model or tag: node}`` or ``decision -> node``; None: no ``Command``.
        include_context: features from the whole conversation, not the last user turn.
        key: the state key the decision is written under.
        constraints: per-decision limits.

    Returns:
        The node function (state -> update, or ``Command`` with ``goto``).

    Raises:
        ConfigError: an empty ``goto`` mapping, or one whose keys name neither a pool model nor a tag.
    """
    _check_goto(goto, current_router(router).pool)

    def route(state: dict[str, Any]) -> dict[str, Any] | Command:
        r = current_router(router)
        decision = route_state(r, state, include_context=include_context, constraints=constraints)
        update = {key: decision_to_state(decision)}
        if goto is None:
            return update
        return Command(update=update, goto=resolve_goto(goto, decision, r.pool))

    route.__name__ = "route"
    return route


# -- cascade nodes ------------------------------------------------------------------------------


def create_parse_node(router: RouterLike) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Parse the latest user turn and start a fresh per-query record.

    The query's fingerprint and modality go into the state (not its bytes); per-query lists are
    reset with ``Overwrite`` so a second question on the same thread starts clean.
    """

    def parse(state: dict[str, Any]) -> dict[str, Any]:
        return {"query": query_state(latest_query(state, router)), "route": None, "candidates": [],
                "answers": Overwrite([]), "attempts": Overwrite([]),
                "escalations": 0, "total_cost_usd": 0.0, "status": "routed", "final": None, "error": None,
                "feedback": None}

    return parse


def create_plan_node(router: RouterLike, *, max_cost_per_query: float | None = None) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Route, then keep the candidates (chosen model, then fallbacks) whose cost fits the cap
    (the cascade graph's ``"plan"`` node; the decision goes to ``state["route"]``)."""
    route_node = create_router_node(router)

    def plan(state: dict[str, Any]) -> dict[str, Any]:
        update = route_node(state)
        assert isinstance(update, dict)
        decision = decision_from_state(update)
        cands = within_budget(decision, decision.ordered, float(state.get("total_cost_usd") or 0.0), max_cost_per_query)
        if not cands:
            return {**update, "candidates": [], "status": "over_budget",
                    "error": f"no eligible model's predicted cost fits max_cost_per_query={max_cost_per_query}"}
        return {**update, "candidates": cands, "status": "routed"}

    return plan


def create_generate_node(pool: ModelPool | None = None, **llm_kwargs: Any) -> RunnableLambda:
    """Call ``state["candidates"]`` in order through ``mmroute.llm`` (its fallback moves on to the
    next candidate on a provider error). Every attempt, failed ones too, is appended to
    ``state["attempts"]``; a step where all candidates fail ends with ``status="provider_error"``.
    Sync and async (``ainvoke`` awaits ``mmroute.llm.acomplete``).

    With a token listener attached (``stream_mode="messages"``) the call goes through a chat model
    (``CandidatesChatModel``), so the generating model's tokens are streamed (metadata
    ``langgraph_node="generate"``; an escalation streams each model's answer in turn). Without
    one it is the plain, non-streaming ``complete`` call."""
    from .generation import CandidatesChatModel, wants_tokens

    call_kw: dict[str, Any] = {**({"pool": pool} if pool is not None else {}), **llm_kwargs}

    def _prepare(state: dict[str, Any]) -> tuple[list[str], int, float]:
        cands = list(state.get("candidates") or [])
        if not cands:
            raise InvalidInputError("generate node has no candidates; run the route node first")
        return cands, int(state.get("escalations") or 0), float(state.get("total_cost_usd") or 0.0)

    def _ok(answer: Any, step: int, spent: float) -> dict[str, Any]:
        rec = answer_state(answer, step)
        billed = float(getattr(answer, "total_cost_usd", 0.0) or 0.0) or rec["cost_usd"]  # failed attempts billed too
        return {"answers": [rec], "attempts": _answer_attempts(answer, step), "total_cost_usd": spent + billed,
                "error": None}

    def _failed(exc: ProviderError, step: int, spent: float) -> dict[str, Any]:
        attempts = [attempt_record(a, step) for a in exc.attempts]
        cost = sum(a.get("cost_usd", 0.0) for a in attempts)
        return {"attempts": attempts, "status": "provider_error", "error": str(exc), "total_cost_usd": spent + cost}

    def generate(state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        from ..llm import complete

        cands, step, spent = _prepare(state)
        try:
            if wants_tokens(config):  # someone streams messages: a chat-model run, so tokens reach them
                model = CandidatesChatModel(candidates=cands, pool=pool, llm_kwargs=llm_kwargs)
                model.invoke(state["messages"], config)
                answer = model.sink[-1]
            else:
                answer = complete(state["messages"], cands, **call_kw)
        except ProviderConfigError:  # missing credentials: fail fast with that message, not as an outage
            raise
        except ProviderError as exc:
            return _failed(exc, step, spent)
        return _ok(answer, step, spent)

    async def agenerate(state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        from ..llm import acomplete

        cands, step, spent = _prepare(state)
        try:
            if wants_tokens(config):
                model = CandidatesChatModel(candidates=cands, pool=pool, llm_kwargs=llm_kwargs)
                await model.ainvoke(state["messages"], config)
                answer = model.sink[-1]
            else:
                answer = await acomplete(state["messages"], cands, **call_kw)
        except ProviderConfigError:  # missing credentials: fail fast with that message, not as an outage
            raise
        except ProviderError as exc:
            return _failed(exc, step, spent)
        return _ok(answer, step, spent)

    return RunnableLambda(generate, afunc=agenerate, name="generate")


def create_verify_node(verifier: Verifier, router: RouterLike, *, max_escalations: int = 2,
                       max_cost_per_query: float | None = None) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Judge the newest answer and decide: accept, or escalate to the next stronger model.

    "Stronger" is the router's prediction for *this* query (``decision.escalation_order``), and
    escalation stops at ``max_escalations`` or when the next call's predicted cost would break
    ``max_cost_per_query`` (spent so far, verification included, plus that call).
    """
    if max_escalations < 0:
        raise ConfigError(f"max_escalations must be >= 0, got {max_escalations}")
    if max_cost_per_query is not None and not max_cost_per_query >= 0:
        raise ConfigError(f"max_cost_per_query must be >= 0, got {max_cost_per_query}")

    def verify(state: dict[str, Any]) -> dict[str, Any]:
        from ..llm.convert import to_openai_messages

        answers = list(state.get("answers") or [])
        if state.get("status") == "provider_error" or not answers or answers[-1].get("verdict") is not None:
            return {}  # nothing new to judge (this step failed): finalize keeps what there is
        last = answers[-1]
        r = current_router(router)
        v = verifier.verify(latest_query(state, r), answer_from_state(last),
                            context={"model": last["model"], "messages": to_openai_messages(state["messages"])})
        verdict = verdict_state(v)
        spent = float(state.get("total_cost_usd") or 0.0) + verdict["cost_usd"]
        update: dict[str, Any] = {"answers": [{**last, "verdict": verdict}], "total_cost_usd": spent}
        escalations = int(state.get("escalations") or 0)
        if verdict["accept"]:
            return {**update, "status": "accepted", "candidates": []}
        # tried: every model that answered or was called (a failed or skipped one is not asked again)
        tried = [a["model"] for a in answers] + [a["model"] for a in state.get("attempts") or []]
        step = next_step(decision_from_state(state), answered=last["model"], accepted=False,
                         tried=tried, escalations=escalations,
                         max_escalations=max_escalations, spent=spent, max_cost=max_cost_per_query)
        if not step.escalates:
            return {**update, "status": step.status, "candidates": []}
        return {**update, "status": "escalating", "candidates": list(step.models), "escalations": escalations + 1}

    return verify


def after_verify(state: dict[str, Any]) -> str:
    """Conditional edge: back to ``generate`` while escalating, else ``finalize``."""
    return "generate" if state.get("status") == "escalating" else "finalize"


def create_finalize_node(router: RouterLike, *, store: FeedbackStore | None = None,
                         record_escalations: bool = True) -> Callable[..., dict[str, Any]]:
    """Answer with the accepted (else the most confident) answer and learn from escalations.

    An escalation gives two answers to one query; when the verifier accepts the stronger model's
    answer, that is a judgment (accepted beats each rejected one, ``source="escalation"``) for the
    feedback store, stored under a deterministic id so a re-run adds nothing.
    """

    def finalize(state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        from ..llm.providers import is_offline_fallback

        answers = list(state.get("answers") or [])
        final = best_answer(answers)
        update: dict[str, Any] = {"final": final}
        if final is None:
            return update
        decision = decision_from_state(state)
        meta = {"model_name": final["model"], "cost_usd": final["cost_usd"], "route_reason": decision.reason,
                "routed_model": decision.model, "status": state.get("status"), "escalations": state.get("escalations", 0),
                "total_cost_usd": state.get("total_cost_usd", 0.0),
                "verdict": final.get("verdict"), "verified": verified(final)}
        if is_offline_fallback(final["text"]):  # the replay provider's stand-in, not a model's answer
            meta["offline_fallback"] = True
        update["messages"] = [AIMessage(content=final["text"], response_metadata=meta)]
        target = store
        accepted = final.get("verdict") and final["verdict"]["accept"]  # type: ignore[index]
        stand_in = any(is_offline_fallback(a["text"]) for a in answers)  # no model answered: nothing to learn
        if record_escalations and target is not None and accepted and len(answers) > 1 and not stand_in:
            _record_escalation(router, target, state, final, answers, thread_id(config))
        return update

    return finalize


def _record_escalation(router: Any, store: Any, state: dict[str, Any], final: AnswerState,
                       answers: Sequence[AnswerState], thread: str) -> None:
    r = current_router(router)
    query = latest_query(state, r)
    for winner, loser in escalation_judgments(final, answers):
        jid = judgment_id("escalation", thread, query.content_hash, winner, loser, user_turn(state["messages"]))
        store.record(query, winner, loser, "model_a", source="escalation", id=jid, image_policy=r.image_policy)


# -- feedback -----------------------------------------------------------------------------------


def feedback_request(state: dict[str, Any]) -> dict[str, Any] | None:
    """What the feedback interrupt shows: the final answer, or the router's first pick and the
    final answer side by side after an escalation."""
    from ..llm.providers import is_offline_fallback

    answers = list(state.get("answers") or [])
    final = state.get("final") or best_answer(answers)
    if final is None or is_offline_fallback(final["text"]):  # a stand-in is no model's answer to judge
        return None
    query = state.get("query") or {}
    first = answers[0] if answers else final
    base = {"question": query.get("text", ""), "n_images": query.get("n_images", 0)}
    if first["model"] != final["model"]:
        return {**base, "kind": "pairwise", "model_a": first["model"], "answer_a": first["text"],
                "model_b": final["model"], "answer_b": final["text"],
                "resume_with": {"winner": list(WINNERS)}}
    return {**base, "kind": "rating", "model": final["model"], "answer": final["text"],
            "resume_with": {"rating": list(RATINGS)}}


def create_feedback_node(router: RouterLike, *, store: FeedbackStore | None = None, source: str = "user") -> Callable[..., dict[str, Any]]:
    """Ask the user (``interrupt``) about the answer and store the reply as a judgment.

    Resume with ``Command(resume={"winner": "model_a"|"model_b"|"tie"})`` after an escalation, or
    ``{"rating": "good"|"bad"}``; ``None`` skips. The node re-runs from its start on resume, so
    nothing is written before ``interrupt`` returns and the judgment id is deterministic (thread,
    query, models): the store's idempotent ``add`` keeps it exactly once however often it runs.
    """
    if store is None:
        raise ConfigError("the feedback node needs a feedback store: pass store= (feedback_store= to the cascade)")

    def feedback(state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        request = feedback_request(state)
        if request is None:
            return {"feedback": None}
        choice = parse_feedback(interrupt(request))
        if choice is None:
            return {"feedback": {"skipped": True}}
        r = current_router(router)
        query = latest_query(state, r)
        if "winner" in choice:
            if request["kind"] != "pairwise":
                raise InvalidInputError("a 'winner' needs two answers; this query has one - resume with {'rating': ...}")
            a, b, winner = request["model_a"], request["model_b"], choice["winner"]
        else:
            rating: Rating = "good" if choice["rating"] == "good" else "bad"  # parse_feedback checked it
            pair = rating_judgment(decision_from_state(state), request.get("model") or request["model_b"], rating)
            if pair is None:
                return {"feedback": {**choice, "stored": None, "why": "no other model to compare with"}}
            a, b, winner = pair
        jid = judgment_id(source, thread_id(config), query.content_hash, a, b, user_turn(state["messages"]))
        store.record(query, a, b, winner, source=source, id=jid, image_policy=r.image_policy)
        return {"feedback": {**choice, "judgment_id": jid, "model_a": a, "model_b": b, "winner": winner}}

    return feedback


__all__ = ["GotoSpec", "after_verify", "attempt_record", "create_feedback_node", "create_finalize_node",
           "create_generate_node", "create_parse_node", "create_plan_node", "create_router_node", "create_verify_node",
           "feedback_request", "latest_query", "resolve_goto", "route_state", "thread_id"]
