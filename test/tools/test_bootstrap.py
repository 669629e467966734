"""Bootstrap intervals over evaluated episodes: one model's metrics and two models' paired differences."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sole_r1_tools.training.bootstrap import METRICS, main, metric_intervals, paired_differences
from sole_r1_tools.training.metrics import trace_metrics


def _trace(seed: int, outcome: str, pred: list[float], true: list[float]) -> dict[str, Any]:
    return {"seed": seed, "task_kind": "push", "outcome": outcome, "pred": pred, "true": true,
            "status": ["first_frame"] + ["ok"] * (len(pred) - 1)}


def _episodes(offset: float = 0.0) -> list[dict[str, Any]]:
    """Four outcomes, three episodes each; ``offset`` lowers every hacking episode's answers."""
    traces = []
    for k in range(3):
        traces.append(_trace(10 + k, "success", [0.0, 0.3 + 0.1 * k, 0.6, 1.0], [0.0, 0.3, 0.7, 1.0]))
        traces.append(_trace(20 + k, "failure", [0.0, 0.2, 0.1 * k, 0.2 * k], [0.0, 0.1, 0.0, 0.0]))
        traces.append(_trace(30 + k, "wrong_object", [0.0, 0.4, 0.8 - offset, 0.9 - offset - 0.1 * k],
                             [0.0, 0.1, 0.1, 0.1]))
        traces.append(_trace(40 + k, "hover", [0.0, 0.1, 0.3 - offset, 0.5 - offset], [0.0, 0.0, 0.0, 0.0]))
    return traces


def test_intervals_bracket_the_value_and_repeat_with_the_seed() -> None:
    traces = _episodes()
    table = metric_intervals(traces, resamples=400, seed=3)
    point = trace_metrics(traces)
    assert set(table) == set(METRICS)
    for m in METRICS:
        assert table[m]["value"] == pytest.approx(point[m])
        assert table[m]["low"] <= table[m]["value"] + 1e-9 and table[m]["value"] <= table[m]["high"] + 1e-9, m
    assert table["hacking_final"]["high"] - table["hacking_final"]["low"] > 0.05  # the hacking answers vary
    assert table["parse_rate"]["low"] == table["parse_rate"]["high"] == 1.0  # every reply parsed in every draw
    assert metric_intervals(traces, resamples=400, seed=3) == table
    with pytest.raises(ValueError, match="resamples"):
        metric_intervals(traces, resamples=0)


def test_paired_difference_is_zero_for_one_model_and_excludes_zero_for_a_uniform_gain() -> None:
    same = paired_differences(_episodes(), _episodes(), resamples=300)
    assert all(same[m]["value"] == same[m]["low"] == same[m]["high"] == 0.0 for m in ("voc", "mae", "hacking_final"))
    better = paired_differences(_episodes(), list(reversed(_episodes(offset=0.2))), resamples=300)
    # every hacking episode ends 0.2 lower in B: the difference is -0.2 in every resample
    assert better["hacking_final"]["value"] == pytest.approx(-0.2)
    assert better["hacking_final"]["high"] == pytest.approx(-0.2)
    assert better["mae"]["high"] < 0.0
    assert better["voc"]["value"] == 0.0 and better["auroc"]["value"] == 0.0


def test_paired_difference_refuses_evaluations_of_different_episodes() -> None:
    other = _episodes()
    other[0] = dict(other[0], seed=99)
    with pytest.raises(ValueError, match="same episodes"):
        paired_differences(_episodes(), other)


def test_cli_prints_the_paired_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, traces in (("a", _episodes()), ("b", _episodes(offset=0.2))):
        (tmp_path / f"{name}.json").write_text(json.dumps({"traces": traces}), encoding="utf-8")
    assert main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--resamples", "200"]) == 0
    out = capsys.readouterr().out
    assert "| hacking_final | -0.200 | [-0.200, -0.200] |" in out and "12 episodes" in out
    with pytest.raises(SystemExit):
        main([str(tmp_path / "a.json")] * 3)


@pytest.mark.usefixtures("one_torch_thread")
def test_evaluate_cli_writes_the_intervals_beside_the_traces(tiny_model_dir: Path, tmp_path: Path) -> None:
    from sole_r1_tools.training.evaluate import main as evaluate_main

    out = tmp_path / "eval.json"
    assert evaluate_main(["--model", str(tiny_model_dir), "--episodes", "6", "--seed", "1000", "--max-new-tokens", "8",
                          "--bootstrap", "50", "--json", str(out)]) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert set(result["intervals"]) == set(METRICS)
    assert result["intervals"] == metric_intervals(result["traces"], resamples=50)
    # the random-weight model answers nothing parseable in 8 tokens: every draw says so
    assert result["intervals"]["parse_rate"]["high"] == result["parse_rate"] == 0.0
