"""Model faults with the real transformers backend: each gives a failure estimate, and the next
step works. Faults are raised from inside the real model's forward pass."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from sole_r1_ros.backends.transformers_backend import TransformersBackend
from sole_r1_ros.core.protocol import load_protocol
from sole_r1_ros.core.scorer import ProgressScorer
from sole_r1_ros.settings.generation import GenerationSettings
from sole_r1_ros.settings.groups import ModelSettings

ROLES = ("external", "wrist")


def views(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {r: rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for r in ROLES}


@pytest.fixture()
def backend(tiny_model_dir: Path) -> TransformersBackend:
    return TransformersBackend(ModelSettings(path=str(tiny_model_dir), device="cpu"))


def fail_once(monkeypatch: pytest.MonkeyPatch, backend: TransformersBackend, error: BaseException) -> None:
    real_forward = backend.model.forward
    state = {"raised": False}

    @functools.wraps(real_forward)  # generate() inspects forward's signature
    def forward(*args, **kwargs):
        if not state["raised"]:
            state["raised"] = True
            raise error
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(backend.model, "forward", forward)


@pytest.mark.parametrize(
    ("error", "prefix"),
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"), "out_of_memory"),
        (RuntimeError("CUBLAS_STATUS_EXECUTION_FAILED"), "model_error"),
        (ValueError("shape mismatch"), "model_error"),
    ],
)
def test_failure_estimate_then_next_step_works(monkeypatch: pytest.MonkeyPatch, backend: TransformersBackend,
                                               error: BaseException, prefix: str) -> None:
    scorer = ProgressScorer(backend, load_protocol(), generation=GenerationSettings.greedy(max_new_tokens=8))
    ep = scorer.new_episode("g", ROLES)
    scorer.score(ep, 1, views(0))
    fail_once(monkeypatch, backend, error)
    failed = scorer.score(ep, 2, views(1))
    assert failed.status == "error" and failed.error.startswith(prefix) and failed.percent == 0
    assert ep.step == 1  # not advanced: the failed frame is not "previous"
    ok = scorer.score(ep, 3, views(2))
    assert ok.status in ("ok", "parse_failed") and ok.new_tokens > 0 and ok.prev_stamp_ns == 1


def test_nan_weights_with_sampling_fail_cleanly(tiny_model_dir: Path, tmp_path: Path) -> None:
    poisoned = tmp_path / "nan_model"
    shutil.copytree(tiny_model_dir, poisoned)
    weights = load_file(poisoned / "model.safetensors")
    name = next(k for k in weights if k.endswith("lm_head.weight") or k.endswith("embed_tokens.weight"))
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, poisoned / "model.safetensors", metadata={"format": "pt"})
    backend = TransformersBackend(ModelSettings(path=str(poisoned), device="cpu"))
    scorer = ProgressScorer(backend, load_protocol(), generation=GenerationSettings(max_new_tokens=8, seed=0))
    ep = scorer.new_episode("g", ROLES)
    scorer.score(ep, 1, views(0))
    e = scorer.score(ep, 2, views(1))
    # NaN logits either make sampling refuse (an error estimate) or produce text without an answer;
    # never an invented number.
    assert e.status in ("error", "parse_failed")
    assert e.percent == 0


def test_empty_reply_is_a_parse_failure(monkeypatch: pytest.MonkeyPatch, backend: TransformersBackend) -> None:
    scorer = ProgressScorer(backend, load_protocol(), generation=GenerationSettings.greedy(max_new_tokens=1))
    eos = backend.processor.tokenizer.eos_token_id
    real_generate = backend.model.generate

    def only_eos(*args, **kwargs):
        out = real_generate(*args, **kwargs)
        out[:, -1] = eos
        return out

    monkeypatch.setattr(backend.model, "generate", only_eos)
    ep = scorer.new_episode("g", ROLES)
    scorer.score(ep, 1, views(0))
    e = scorer.score(ep, 2, views(1))
    assert (e.status, e.parse_status, e.raw_text) == ("parse_failed", "no_answer", "")


def test_cancel_cuts_a_long_generation_short(backend: TransformersBackend) -> None:
    import threading
    import time

    scorer = ProgressScorer(backend, load_protocol(), generation=GenerationSettings(max_new_tokens=100_000, seed=0))
    ep = scorer.new_episode("g", ROLES)
    scorer.score(ep, 1, views(0))
    timer = threading.Timer(0.5, backend.cancel)
    timer.start()
    t0 = time.monotonic()
    e = scorer.score(ep, 2, views(1))
    assert time.monotonic() - t0 < 60  # without cancel this would run for 100k tokens
    assert 0 < e.new_tokens < 100_000
