"""One token-estimate rule (mmroute.tokens) for routing filters and offline usage alike."""

from __future__ import annotations

from mmroute.payload import Payload
from mmroute.tokens import estimate_prompt_tokens, estimate_text_tokens, estimate_texts_tokens


def test_token_estimate_is_conservative_for_non_latin():
    assert estimate_text_tokens("") == 0 and estimate_text_tokens(None) == 0
    assert estimate_text_tokens("a" * 400) == 100
    assert estimate_text_tokens("a") == 1
    assert estimate_text_tokens("語" * 100) == 100
    assert estimate_text_tokens("ab語") == 2


def test_texts_sent_together_are_rounded_once():
    assert estimate_texts_tokens(["a", "a", "a", "a"]) == 1
    assert estimate_texts_tokens([]) == 0


def test_prompt_estimate_counts_text_tool_calls_framing_and_images():
    msgs = [{"role": "user", "content": [{"type": "text", "text": "a" * 40},
                                         {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}]
    assert estimate_prompt_tokens(msgs, tokens_per_image=100) == (40 + 16) // 4 + 100
    call = {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    with_call = msgs + [{"role": "assistant", "content": None, "tool_calls": [call]}]
    assert estimate_prompt_tokens(with_call, tokens_per_image=100) > estimate_prompt_tokens(msgs, tokens_per_image=100)
    assert estimate_prompt_tokens([]) == 0


def test_offline_usage_and_routing_filters_share_the_non_latin_rule():
    """A CJK prompt is not undercounted by the offline usage estimate (it used chars/4)."""
    text = "語" * 400
    prompt = estimate_prompt_tokens([{"role": "user", "content": text}])
    assert prompt >= 400
    assert Payload.from_messages([{"role": "user", "content": text}]).text_tokens >= 400
