"""The closed loop with real processes: tabletop driver -> reward node (built-in default model,
request mode) -> learner node (reward client + relabelling buffer + chunked SAC), plus the
in-process baselines; a short smoke run of ``python -m sole_r1_tools.learner.closed_loop``.

Checked: every transition gets its reward or an explicit failure, none is lost, every request
ends in exactly one final answer, and no reward is paired with a frame of another chunk (the
scored frame's stamp is the requested chunk end's, as the driver's ground-truth log records it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ros_helpers import allocate_domain_id
from sole_r1_ros.learner.client import Outcome
from sole_r1_tools.learner import closed_loop

pytestmark = pytest.mark.ros

HORIZON = 4
KNOWN_DROP_REASONS = {o.value for o in Outcome} | {"timeout", "predecessor_failed", "no_node_reward", "non_finite"}


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("closed_loop")
    code = closed_loop.main([
        "--out", str(out), "--task", "reach", "--steps", "60", "--eval-every", "60", "--eval-episodes", "2",
        "--warmup-steps", "20", "--updates-per-chunk", "1", "--seed", "3",
        "--domain-id", str(allocate_domain_id()), "--timeout", "300",
    ])
    logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in (out / "model").glob("*.log"))
    assert code == 0, logs
    return out


def test_every_transition_gets_its_reward_or_an_explicit_failure(run: Path) -> None:
    summary = next(r for r in _jsonl(run / "model" / "learner.jsonl") if r["kind"] == "summary")
    buffer = summary["buffer"]
    assert buffer["added"] == 60 // HORIZON
    assert buffer["pending"] == 0
    assert buffer["labelled"] + sum(buffer["dropped"].values()) == buffer["added"]
    assert set(buffer["dropped"]) <= KNOWN_DROP_REASONS
    assert buffer["labelled"] > 0


def test_every_request_ends_in_exactly_one_final_answer(run: Path) -> None:
    log = _jsonl(run / "model" / "learner.jsonl")
    answers = _jsonl(run / "model" / "answers.jsonl")
    finals: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for a in answers:
        if a["final"]:
            finals.setdefault((a["episode"], a["index"]), []).append(a)
    requested = {(r["episode"], i) for r in log if r["kind"] in ("train_episode", "eval")
                 for i in range(len(r["stamps"]))}
    assert requested, "the learner made no requests"
    assert requested <= set(finals), f"requests without a final answer: {sorted(requested - set(finals))}"
    assert all(len(v) == 1 for v in finals.values())
    for a in answers:
        assert a["outcome"] in {o.value for o in Outcome}
        if a["outcome"] != "ok":
            assert a["progress"] is None or not a["usable"]  # never a silent reward


def test_no_reward_is_paired_with_a_frame_of_another_chunk(run: Path) -> None:
    log = _jsonl(run / "model" / "learner.jsonl")
    gt = _jsonl(run / "model" / "ground_truth.jsonl")
    answers = {(a["episode"], a["index"]): a for a in _jsonl(run / "model" / "answers.jsonl") if a["final"]}
    chunk_ends = {(r["env_episode"], r["stamp_ns"]) for r in gt}
    checked = 0
    for record in log:
        if record["kind"] != "train_episode":
            continue
        stamps = record["stamps"]
        assert len(set(stamps)) == len(stamps)
        for index, stamp in enumerate(stamps):
            assert (record["env_episode"], stamp) in chunk_ends  # a frame the driver published for this episode
            answer = answers[(record["episode"], index)]
            assert answer["requested_stamp_ns"] == stamp
            if answer["usable"]:
                assert answer["stamp_ns"] == stamp
                checked += 1
    assert checked > 0
    steps = {(r["env_episode"], r["stamp_ns"]): r["step"] for r in gt}
    for record in log:
        if record["kind"] == "train_episode":
            assert [steps[(record["env_episode"], s)] for s in record["stamps"]] == \
                [HORIZON * i for i in range(len(record["stamps"]))]


def test_ground_truth_stays_out_of_the_learner(run: Path) -> None:
    for name in ("learner.jsonl", "answers.jsonl"):
        for record in _jsonl(run / "model" / name):
            assert "true_progress" not in record and "success" not in record
    assert any("true_progress" in r for r in _jsonl(run / "model" / "ground_truth.jsonl"))


def test_results_compare_the_three_conditions(run: Path) -> None:
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    assert set(results["conditions"]) == {"model", "ground_truth", "random"}
    for cond, data in results["conditions"].items():
        assert [c["steps"] for c in data["curve"]] == [0, 60], cond
        for point in data["curve"]:
            assert point["episodes"] == 2 and 0.0 <= point["true_success"] <= 1.0
    model = results["conditions"]["model"]
    assert model["train_episodes"] == 60 // (HORIZON * 5)
    assert model["reward_quality"]["chunk_ends"] > 0
    assert (run / "learning_curve.png").stat().st_size > 10_000
