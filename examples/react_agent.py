"""A ReAct agent with a tool, made to route every image+text query by changing one line.

The agent is the plain ``langgraph.prebuilt.create_react_agent(model, tools)``; the only change
is the model line in ``build_agent``: a ``RoutedChatModel`` instead of one fixed chat model. Each
question then goes to the model the router predicts is best for the money (a text-only model
never gets an image), and the agent's tool calls work as before.

Runs offline: the candidate models are ``scripted/<name>`` (mmroute's scripted LiteLLM backend)
and the router is a tiny one (``clip:tiny``) trained on the synthetic example set shipped with
mmroute (``mmroute.example_dir()``). To use real models, train a router whose pool lists real LiteLLM
ids (``mmroute train ...``), load it with ``Router.load(...)`` and skip ``offline_models()``.

    python examples/react_agent.py
"""

from __future__ import annotations

import base64
import re
import sys
import warnings

from mmroute.offline import use_local_cost_map

use_local_cost_map()  # offline: LiteLLM's bundled price map, set before litellm is imported

from langchain_core.messages import AIMessage, HumanMessage  # noqa: E402
from langchain_core.tools import tool  # noqa: E402
from langgraph.prebuilt import create_react_agent  # noqa: E402

from mmroute import RoutedChatModel, example_dir  # noqa: E402

EXAMPLE = example_dir()


@tool
def multiply(a: float, b: float) -> float:
    """Multiply two numbers."""
    return a * b


def build_agent(router):
    """The user's existing agent. Before routing, the model line was e.g.
    ``model = ChatOpenAI(model="gpt-4o")``: one model for every question."""
    model = RoutedChatModel(router=router)  # the one changed line
    with warnings.catch_warnings():  # LangGraph 1.x points to langchain.agents.create_agent; both work
        warnings.simplefilter("ignore", DeprecationWarning)
        return create_react_agent(model, [multiply])


# -- offline set-up: a tiny router and scripted models (not part of the user's agent) -------------


def offline_router(max_judgments: int | None = None):
    """A router trained on the example set's ``replay/<m>`` judgments for the models ``scripted/<m>``.

    The judgments are used as they are: each pool model lists its training name under ``aliases``
    (the same way a pool maps a dataset's ``gpt-4o-2024-05-13`` to a deployment ``openai/gpt-4o``).
    """
    from mmroute import CostAwarePolicy, ModelPool, read_judgments, train_router

    judgments = read_judgments(EXAMPLE / "judgments.jsonl").items[:max_judgments]
    example_pool = ModelPool.load(EXAMPLE / "pool.yaml")
    pool = ModelPool(models=tuple(m.model_copy(update={"name": m.name.replace("replay/", "scripted/", 1),
                                                       "aliases": (m.name,)}) for m in example_pool.models))
    return train_router(judgments, encoder="clip:tiny", pool=pool, base_dir=EXAMPLE, policy=CostAwarePolicy(lam=200.0))


def _scripted_step(messages, params):
    """Every scripted model behaves the same: read the question, call ``multiply``, then answer."""
    from mmroute.testing import tool_call

    last = messages[-1]
    if last["role"] == "tool":
        return f"The answer is {float(last['content']):g}."
    content = last["content"]
    text = content if isinstance(content, str) else " ".join(b.get("text", "") for b in content if b.get("type") == "text")
    has_image = not isinstance(content, str) and any(b.get("type") == "image_url" for b in content)
    numbers = [float(x) for x in re.findall(r"\d+(?:\.\d+)?", text)]
    if has_image:  # a scripted "vision" model: pretends it counted 4 circles in the picture
        numbers = [4.0, *numbers]
    a, b = (numbers + [1.0, 1.0])[:2]
    return tool_call("multiply", {"a": a, "b": b})


def offline_models():
    """Script every pool model (``scripted/*``) to answer through the tool."""
    from mmroute.testing import ScriptedLLM

    return ScriptedLLM(default=_scripted_step).install()


def main(max_judgments: int | None = None) -> list[AIMessage]:
    router = offline_router(max_judgments)
    offline_models()
    agent = build_agent(router)
    png = base64.b64encode((EXAMPLE / "images" / "ex-0005.png").read_bytes()).decode("ascii")
    questions = [
        HumanMessage("What is 12 times 7?"),
        HumanMessage([{"type": "text", "text": "How many circles are in the image? Multiply the count by 3."},
                      {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}}]),
    ]
    finals = []
    for q in questions:
        out = agent.invoke({"messages": [q]})
        final = out["messages"][-1]
        meta = final.response_metadata
        print(f"Q: {q.text}{' [+image]' if not isinstance(q.content, str) else ''}")
        print(f"   -> {meta['model_name']} (${meta['cost_usd']:.6f}): {final.content}")
        print(f"   why: {meta['route_reason']}")
        finals.append(final)
    return finals


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else None)
