"""The prompt: the checkpoint's training wording, variants, and template validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from sole_r1_ros.core.protocol import ProtocolError, load_protocol

# The SOLE-R1-8B training prompts, as published with the checkpoint's reward server.
SYSTEM = (
    "You are an expert roboticist with the goal of predicting task progress percentages given frames from a video "
    "of a robot attempting to complete a task. You first think, in the form of an internal monologue, before "
    "providing your final answer. Your reasoning process MUST BE enclosed within <think> </think> tags and should "
    "include detailed reasoning. Your final answer MUST BE enclosed within <answer> </answer> tags and should be a "
    "integer (positive or negative) representing current task progress percentage. Example output format: "
    "<think>[detailed reasoning process]</think><answer>[current task progress]%</answer>"
)
TWO_VIEW = (
    "Here is an image containing multiple camera views of a robot attempting to complete a task. The views on the "
    "top are from an external camera. The views on the bottom are from the robot's wrist camera. The views from "
    "the very first timestep are shown to the left. The views from the previous timestep are shown in the middle. "
    "The views from the current timestep are shown to the right. The task description is: lift the cube. The task "
    "progress for the very first timestep is 0%. The task progress for the previous timestep is 37%. Predict the "
    "task progress for the current timestep."
)


def test_default_protocol_reproduces_training_prompts() -> None:
    protocol = load_protocol()
    assert protocol.templates.system == SYSTEM
    assert protocol.templates.user_text("lift the cube", 37, n_views=2) == TWO_VIEW


def test_variants() -> None:
    t = load_protocol().templates
    single = t.user_text("g", 5, n_views=1)
    assert "external camera" not in single and "previous timestep is 5%" in single
    zero = t.user_text("g", None, n_views=2)
    assert "previous timestep is" not in zero and "shown in the middle" not in zero
    assert "first timestep is 0%" in zero


def test_messages_put_image_before_text() -> None:
    messages = load_protocol().templates.messages("stack the blocks", 10, n_views=2)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == SYSTEM
    assert [part["type"] for part in messages[1]["content"]] == ["image", "text"]


def test_goal_braces_are_not_template_fields() -> None:
    text = load_protocol().templates.user_text("move {prev_progress} {0} block", 3, n_views=1)
    assert "move {prev_progress} {0} block" in text


def test_layout_and_generation_defaults() -> None:
    p = load_protocol()
    assert (p.layout.tile_size, p.layout.gap, p.layout.resize_factor) == (384, 5, 28)
    g = p.generation
    assert (g.do_sample, g.temperature, g.top_p, g.top_k, g.max_new_tokens) == (True, 1.0, 0.9, 50, 200)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_custom_protocol_file(tmp_path: Path) -> None:
    path = _write(tmp_path, """
name: other
system: "Be brief."
user:
  multi_view: "Task {task_description}; before {prev_progress}%."
  multi_view_from_zero: "Task {task_description}."
  single_view: "One cam: {task_description} {prev_progress}"
  single_view_from_zero: "One cam: {task_description}"
composite: {tile_size: 224, gap: 0}
generation: {do_sample: false, max_new_tokens: 64}
""")
    p = load_protocol(path)
    assert p.name == "other" and p.layout.tile_size == 224 and p.generation.max_new_tokens == 64
    assert p.templates.user_text("x", 4, n_views=2) == "Task x; before 4%."


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("system: s\nuser: {multi_view: a}", "lacks user templates"),
        ("- a list", "mapping"),
        ("system: s\nuser:\n  multi_view: '{goal}'\n  multi_view_from_zero: a\n"
         "  single_view: a\n  single_view_from_zero: a",
         "unknown placeholders"),
        ("system: ''\nuser:\n  multi_view: a\n  multi_view_from_zero: a\n  single_view: a\n  single_view_from_zero: a",
         "non-empty"),
        ("system: s\nuser: {a: [", "not valid YAML"),
        ("system: s\nuser:\n  multi_view: a\n  multi_view_from_zero: a\n  single_view: a\n  single_view_from_zero: a\n"
         "composite: {tiles: 3}", "unexpected keyword"),
    ],
)
def test_bad_protocol_files(tmp_path: Path, body: str, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        load_protocol(_write(tmp_path, body))


def test_missing_protocol_file(tmp_path: Path) -> None:
    with pytest.raises(ProtocolError, match="cannot read"):
        load_protocol(tmp_path / "nope.yaml")
