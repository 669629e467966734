"""The SOLE-R1 protocol as OpenAI chat-completion requests and replies, per server dialect.

Pure functions, no I/O: the composite as a lossless PNG data URL, the protocol's messages in
training order (system, then user with the image before the text), a request body with every
sampling parameter explicit in the fields each server takes, and the reply turned back into
``<think>…</think><answer>…</answer>`` text whether the server split the reasoning out or not.

Dialects (``model.dialect``):

- ``vllm``: ``top_k``, ``min_p``, ``repetition_penalty``, ``seed``, ``skip_special_tokens`` and
  ``mm_processor_kwargs`` (the image token budget) as extra body fields
  (``vllm/entrypoints/openai/protocol.py``), with OpenAI's ``presence_penalty`` /
  ``frequency_penalty``.
- ``sglang``: ``top_k``, ``min_p``, ``repetition_penalty`` and the OpenAI penalties in the body,
  ``separate_reasoning: false`` so ``content`` holds the reply verbatim
  (``python/sglang/srt/entrypoints/openai/protocol.py``); no per-request image budget (set it on
  the server).
- ``transformers`` (``transformers serve``): ``top_k``, ``do_sample`` and ``repetition_penalty``
  only inside the ``generation_config`` JSON string (top-level fields it does not know are refused
  with 422; it ignores ``presence_penalty`` and turns ``frequency_penalty`` f into a repetition
  penalty 1 + f, so neither is sent); ``model`` may be omitted (the server answers with the model it
  was started with); no per-request image budget.

vLLM and SGLang fill every sampling field a request leaves out from the checkpoint's
``generation_config.json`` (``repetition_penalty``, ``temperature``, ``top_k``, ``top_p``,
``min_p``), transformers serve every field its ``generation_config`` leaves out: all of them are
sent, at the SOLE-R1 reference's values (its vLLM ``SamplingParams``: neutral penalties, ``min_p`` 0).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from typing import Any

import cv2
import numpy as np
from PIL import Image

from sole_r1_ros.backends.contract import (
    REPETITION_PENALTY,
    Conversation,
    Generation,
    special_text_order,
    split_special_texts,
)
from sole_r1_ros.errors import InferenceError
from sole_r1_ros.settings.generation import GenerationSettings

DIALECTS = ("vllm", "sglang", "transformers")
# The neutral values of the fields vLLM and SGLang take (OpenAI's penalties plus their extra
# sampling fields): the reference's vLLM SamplingParams defaults
NEUTRAL_SAMPLING: dict[str, float] = {
    "min_p": 0.0, "repetition_penalty": REPETITION_PENALTY, "presence_penalty": 0.0, "frequency_penalty": 0.0,
}

# The PNG encoder: lossless whatever the settings. OpenCV's libpng with zlib level 1 and the RLE
# strategy was the fastest of PIL levels 0-9 and OpenCV levels 0-9 x strategies on the two-view
# composite, and smaller than PIL's level 1 (bench/server_bench.py --parts png; docs/performance.md)
PNG_COMPRESS_LEVEL = 1
PNG_STRATEGY = cv2.IMWRITE_PNG_STRATEGY_RLE

# The added/special token strings of the Qwen2-VL / Qwen2.5-VL / Qwen3-VL tokenizers (as in
# their tokenizer.json and chat template) and the protocol's own tags. A server backend has no
# tokenizer, so these are what a goal is kept from forming; a local tokenizer.json can add more.
QWEN_VL_SPECIAL_TEXTS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>",
    "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>",
    "</tool_response>", "<think>", "</think>", "<answer>", "</answer>",
)


def png_bytes(image: Image.Image, *, compress_level: int = PNG_COMPRESS_LEVEL, strategy: int = PNG_STRATEGY) -> bytes:
    """The image as PNG (lossless: decoding gives back these exact RGB pixels)."""
    rgb = np.asarray(image.convert("RGB"))
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_PNG_COMPRESSION, compress_level, cv2.IMWRITE_PNG_STRATEGY, strategy])
    if not ok:
        raise InferenceError("PNG encoding of the composite failed")
    return encoded.tobytes()


def png_data_url(image: Image.Image) -> str:
    """The image as a ``data:image/png;base64,...`` URL (lossless: the server sees these pixels)."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")


def chat_messages(conversation: Conversation, image_url: str) -> list[dict[str, Any]]:
    """The protocol's messages in OpenAI form: the one ``{"type": "image"}`` part becomes an
    ``image_url`` part carrying ``image_url``, in place (so the image stays before the text)."""
    out: list[dict[str, Any]] = []
    images = 0
    for message in conversation:
        content = message["content"]
        if isinstance(content, str):
            out.append({"role": message["role"], "content": content})
            continue
        parts: list[dict[str, Any]] = []
        for part in content:
            if part["type"] == "image":
                images += 1
                parts.append({"type": "image_url", "image_url": {"url": image_url}})
            elif part["type"] == "text":
                parts.append({"type": "text", "text": part["text"]})
            else:
                raise ValueError(f"unsupported message part {part['type']!r}")
        out.append({"role": message["role"], "content": parts})
    if images != 1:
        raise ValueError(f"a conversation must show exactly one image, this one shows {images}")
    return out


def request_body(
    dialect: str,
    *,
    model: str | None,
    messages: list[dict[str, Any]],
    settings: GenerationSettings,
    min_pixels: int = 0,
    max_pixels: int = 0,
) -> dict[str, Any]:
    """The chat-completion body for ``dialect`` with every sampling parameter explicit. Greedy
    is temperature 0 (and top-p 1, top-k off); penalties neutral and ``min_p`` 0 where the dialect
    takes them (:data:`NEUTRAL_SAMPLING`; transformers serve: ``repetition_penalty`` only);
    ``seed`` is sent when set. ``min_pixels`` / ``max_pixels`` (0 = the server's) go where the
    dialect takes them (vLLM only)."""
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}; expected one of {DIALECTS}")
    greedy = not settings.do_sample
    temperature = 0.0 if greedy else float(settings.temperature)
    top_p = 1.0 if greedy else float(settings.top_p)
    body: dict[str, Any] = {}
    if model is not None:
        body["model"] = model
    body.update(messages=messages, max_tokens=settings.max_new_tokens, temperature=temperature, top_p=top_p)
    if dialect == "transformers":
        config: dict[str, Any] = {"do_sample": not greedy, "max_new_tokens": settings.max_new_tokens,
                                  "repetition_penalty": REPETITION_PENALTY}
        if not greedy:
            config.update(temperature=temperature, top_p=top_p, top_k=settings.top_k)
        body["generation_config"] = json.dumps(config, sort_keys=True)
    else:
        body["top_k"] = -1 if greedy else settings.top_k
        body.update(NEUTRAL_SAMPLING)
        body["skip_special_tokens"] = True
    if settings.seed is not None:
        body["seed"] = settings.seed
    if dialect == "sglang":
        body["separate_reasoning"] = False
    if dialect == "vllm" and (min_pixels or max_pixels):
        kwargs: dict[str, int] = {}
        if min_pixels:
            kwargs["min_pixels"] = min_pixels
        if max_pixels:
            kwargs["max_pixels"] = max_pixels
        body["mm_processor_kwargs"] = kwargs
    return body


def reply_text(message: Mapping[str, Any]) -> str:
    """The model's whole reply from a chat ``message``: ``content`` as is, or, when a reasoning
    parser moved the ``<think>`` text into ``reasoning_content`` (vLLM before 0.10, SGLang,
    transformers serve) or ``reasoning`` (newer vLLM), ``<think>{reasoning}</think>{content}``."""
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise InferenceError(f"reply content is {type(content).__name__}, not text")
    reasoning = message.get("reasoning_content")
    if reasoning is None:
        reasoning = message.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, str):
        raise InferenceError(f"reply reasoning is {type(reasoning).__name__}, not text")
    if content is None and reasoning is None:
        raise InferenceError("reply message has neither content nor reasoning")
    text = content or ""
    if reasoning and "<think>" not in text:
        text = f"<think>{reasoning}</think>{text}"
    return text


def generation_from_reply(payload: object, *, max_new_tokens: int = 0) -> tuple[Generation, str | None]:
    """One :class:`Generation` from a parsed chat-completion reply and the model name the server
    reports; raises :class:`InferenceError` naming what is missing or malformed.

    Token counts come from ``usage``. A reply cut at the limit (``finish_reason: "length"``)
    reports at least ``max_new_tokens`` (the request's ``max_tokens``) new tokens, also when the
    server leaves ``usage`` out or counts fewer, so the scorer's token-limit check sees it."""
    if not isinstance(payload, dict):
        raise InferenceError(f"reply is a JSON {type(payload).__name__}, not an object")
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices:
        raise InferenceError("reply has no choices")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise InferenceError("reply's first choice has no message")
    text = reply_text(message)
    usage = payload.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    prompt_tokens = usage.get("prompt_tokens")
    new_tokens = usage.get("completion_tokens")
    new_tokens = new_tokens if isinstance(new_tokens, int) else 0
    if choice.get("finish_reason") == "length":
        new_tokens = max(new_tokens, max_new_tokens)
    model = payload.get("model")
    return Generation(
        text=text,
        prompt_tokens=prompt_tokens if isinstance(prompt_tokens, int) else 0,
        new_tokens=new_tokens,
    ), model if isinstance(model, str) else None


def escape_special_texts(text: str, specials: Iterable[str]) -> str:
    """Split every special string in ``text`` with a zero-width space after its first character,
    longest first: the in-process backend's escaping, with a fixed list instead of a tokenizer."""
    return split_special_texts(text, special_text_order(specials))


__all__ = [
    "DIALECTS",
    "NEUTRAL_SAMPLING",
    "PNG_COMPRESS_LEVEL",
    "PNG_STRATEGY",
    "QWEN_VL_SPECIAL_TEXTS",
    "chat_messages",
    "escape_special_texts",
    "generation_from_reply",
    "png_bytes",
    "png_data_url",
    "reply_text",
    "request_body",
]
