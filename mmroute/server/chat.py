"""``/v1/chat/completions`` answered: the routed call (with fallbacks) or the verify/escalate
cascade, formatted as OpenAI's chat completion or its SSE stream, with the decision in headers and
the ``mmroute`` field."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..errors import InvalidInputError, ProviderError
from ..llm.call import Answer, AnswerStream
from ..policy import RouteDecision
from .decisions import DecisionRecord, RecentDecisions
from .errors import HTTPError
from .errors import error_body as _error_body
from .schemas import (ROUTER_MODEL, ChatRequest)

if TYPE_CHECKING:

    pass

from .service import RouterService, decision_headers, mmroute_meta

log = logging.getLogger("mmroute.server")

# -- chat -------------------------------------------------------------------------------------------------

async def chat_completion(service: RouterService, req: ChatRequest) -> Response:
    pool_names = service.router.pool.names
    direct: str | None = None
    if req.model != ROUTER_MODEL:
        if service.config.pass_through and req.model in pool_names:
            direct = req.model
        else:
            offered = [ROUTER_MODEL] + (pool_names if service.config.pass_through else [])
            raise HTTPError(404, f"model {req.model!r} is not served here; available: {', '.join(offered)}",
                            code="model_not_found", param="model")
    opts = req.mmroute
    use_cascade = service.cascade is not None if opts.cascade is None else opts.cascade
    if use_cascade and service.cascade is None:
        raise HTTPError(400, "cascade=true needs a server started with --cascade", code="invalid_option", param="mmroute")
    if use_cascade and (direct or req.tools):
        raise HTTPError(400, "the cascade verifies answers, not tool calls or a fixed model: send "
                        "mmroute.cascade=false with tools or a pool model", code="invalid_option", param="mmroute")
    if use_cascade:
        return await chat_cascade(service, req)
    router, rec = await service.decide(req.messages, opts, tools=req.tools)
    if direct is not None:
        if direct in rec.decision.filtered:
            raise HTTPError(400, f"model {direct} cannot take this query: {rec.decision.filtered[direct]}",
                            code="model_cannot_take_query", param="model")
        candidates = [direct]
    else:
        candidates = rec.decision.ordered
    kwargs: dict[str, Any] = {"pool": router.pool, "breaker": service.breaker, "timeout": service.config.llm_timeout_s,
                              "max_retries": service.config.max_retries, **service.llm_kwargs, **req.llm_params()}
    from ..llm import acomplete, astream_complete

    if req.stream:
        if req.stream_options:
            kwargs["stream_options"] = req.stream_options
        stream = await astream_complete(req.messages, candidates, **kwargs)
        return StreamingResponse(_sse(service, rec, stream), media_type="text/event-stream",
                                 headers={**decision_headers(rec, stream.model), "cache-control": "no-cache"})
    answer = await acomplete(req.messages, candidates, **kwargs)
    _account(service, rec, answer)
    await service.persist(rec)
    body = _completion_body(answer)
    body["mmroute"] = mmroute_meta(rec, answer)
    return JSONResponse(body, headers=decision_headers(rec, answer.model))


def _completion_body(answer: Answer) -> dict[str, Any]:
    raw = answer.raw
    body: dict[str, Any] = raw.model_dump(mode="json", exclude_none=False) if hasattr(raw, "model_dump") else {}
    body.setdefault("id", f"chatcmpl-{uuid.uuid4().hex}")
    body.setdefault("created", int(time.time()))
    body["object"] = "chat.completion"
    body["model"] = answer.model
    body["usage"] = {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
                     "total_tokens": answer.prompt_tokens + answer.completion_tokens}
    for key in [k for k in body if k.startswith("_")]:
        body.pop(key)
    return body


def _account(service: RouterService, rec: DecisionRecord, answer: Answer) -> None:
    m = service.metrics
    rec.answered_by = answer.model  # the record persist() writes, even if the LRU dropped it meanwhile
    rec.cost_usd = answer.total_cost_usd
    service.decisions.set_answered_by(rec.id, answer.model)
    m.answers.labels(answer.model).inc()
    for a in answer.attempts:
        if a.cost_usd:
            m.cost.labels(a.model).inc(a.cost_usd)
    if answer.fell_back:
        m.fallbacks.inc()
    log.info("decision %s answered by %s in %.3fs, $%.6f", rec.id, answer.model, answer.latency_s, answer.total_cost_usd)


def _sse_data(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


async def _sse(service: RouterService, rec: DecisionRecord, stream: AnswerStream) -> AsyncIterator[bytes]:
    """OpenAI's chunk stream, every chunk naming the answering model; a last chunk carries the
    decision id and cost (``choices: []``), then ``[DONE]``."""
    first = True
    created = int(time.time())
    cid = f"chatcmpl-{uuid.uuid4().hex}"
    try:
        async for chunk in stream:
            d = chunk.model_dump(mode="json", exclude_none=True) if hasattr(chunk, "model_dump") else dict(chunk)
            d.setdefault("id", cid)
            d.setdefault("created", created)
            d["object"] = "chat.completion.chunk"
            d["model"] = stream.model
            if first:
                d["mmroute"] = {"decision_id": rec.id, "routed_model": rec.decision.model}
                first = False
            yield _sse_data(d)
    except ProviderError as exc:  # part of the answer is out: report in-band, as OpenAI does
        service.metrics.errors.labels("provider_error").inc()
        yield _sse_data(_error_body(str(exc), "api_error", "provider_error"))
        yield b"data: [DONE]\n\n"
        return
    answer = stream.answer
    if answer is not None:
        _account(service, rec, answer)
        await service.persist(rec)
        yield _sse_data({"id": cid, "object": "chat.completion.chunk", "created": created, "model": answer.model,
                         "choices": [], "mmroute": mmroute_meta(rec, answer)})
    yield b"data: [DONE]\n\n"


async def chat_cascade(service: RouterService, req: ChatRequest) -> Response:
    """The verify/escalate graph for one request; a stream carries the accepted answer as one chunk
    (an answer cannot be streamed before it is verified)."""
    from langchain_core.messages import convert_to_messages

    from ..cascade import verified
    from ..graph.nodes import latest_query
    from ..graph.state import decision_from_state

    assert service.cascade is not None
    if req.mmroute.model_dump(exclude_defaults=True, exclude={"cascade"}):
        raise HTTPError(400, "per-request routing options (lam, max_cost, min_quality, require, exclude) are not "
                        "supported by the cascade; send mmroute.cascade=false to use them", code="invalid_option",
                        param="mmroute")
    router = service.router
    decision_id = RecentDecisions.new_id()
    try:  # the graph's message channel is LangChain's: what it cannot read is the client's error, not ours
        messages = convert_to_messages(req.messages)
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidInputError(f"messages cannot be read: {str(exc).splitlines()[0]}") from None
    state = await service.cascade.ainvoke({"messages": messages},
                                          config={"configurable": {"thread_id": decision_id}})
    final = state.get("final")
    if final is None:
        raise ProviderError(f"the cascade found no answer ({state.get('status')}): {state.get('error')}")
    decision: RouteDecision = decision_from_state(state).model_copy(update={"decision_id": decision_id})
    rec = DecisionRecord(id=decision_id, query=latest_query(state, router), decision=decision,
                         answered_by=final["model"], router_version=router.version,
                         cost_usd=float(state.get("total_cost_usd") or 0.0))
    service.decisions.add(rec)
    await service.persist(rec)
    m = service.metrics
    m.routes.labels(decision.model).inc()
    m.answers.labels(final["model"]).inc()
    m.cost.labels(final["model"]).inc(float(state.get("total_cost_usd") or 0.0))
    m.escalations.inc(int(state.get("escalations") or 0))
    ok = verified(final)  # False: no answer passed verification; the most confident one is returned, flagged
    meta = mmroute_meta(rec, None, model=final["model"], cost_usd=float(state.get("total_cost_usd") or 0.0),
                         escalations=int(state.get("escalations") or 0), status=state.get("status"), verified=ok,
                         answers=[{"model": a["model"], "accepted": (a.get("verdict") or {}).get("accept")}
                                  for a in state.get("answers") or []])
    headers = {**decision_headers(rec, final["model"]), "x-mmroute-verified": str(ok).lower()}
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    message = {"role": "assistant", "content": final["text"]}
    if req.stream:
        async def one() -> AsyncIterator[bytes]:
            yield _sse_data({"id": cid, "object": "chat.completion.chunk", "created": created, "model": final["model"],
                             "choices": [{"index": 0, "delta": message, "finish_reason": None}], "mmroute": meta})
            yield _sse_data({"id": cid, "object": "chat.completion.chunk", "created": created, "model": final["model"],
                             "choices": [{"index": 0, "delta": {}, "finish_reason": final.get("finish_reason") or "stop"}]})
            yield b"data: [DONE]\n\n"
        return StreamingResponse(one(), media_type="text/event-stream", headers=headers)
    body = {"id": cid, "object": "chat.completion", "created": created, "model": final["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": final.get("finish_reason") or "stop"}],
            "mmroute": meta}
    return JSONResponse(body, headers=headers)
