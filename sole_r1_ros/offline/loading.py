"""Loading the scorer for an offline run, optionally without transformers' progress output."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from sole_r1_ros.backends.registry import backend_class
from sole_r1_ros.core.scorer import ProgressScorer, build_scorer
from sole_r1_ros.settings.groups import DecodingSettings, ModelSettings


@contextmanager
def transformers_quiet(quiet: bool = True) -> Iterator[None]:
    """Silence transformers' progress bars (the "Loading weights" bar) and its info/warning logs
    while the block runs, then restore them. A no-op when ``quiet`` is false or transformers is
    not installed."""
    if not quiet:
        yield
        return
    # the same offline mode the transformers backend sets before it imports transformers
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_scorer(model: ModelSettings, decoding: DecodingSettings, *, quiet: bool = False) -> ProgressScorer:
    """:func:`~sole_r1_ros.core.scorer.build_scorer`, quietly when ``quiet`` (the server backend
    never imports transformers, so there is nothing to silence)."""
    with transformers_quiet(quiet and backend_class(model.backend).in_process):
        return build_scorer(model, decoding)


__all__ = ["load_scorer", "transformers_quiet"]
