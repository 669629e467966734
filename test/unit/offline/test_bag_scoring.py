"""score_bag on real rosbag2 files with a real tiny model: outputs, errors, atomicity, resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from bag_fixtures import T0, write_bag
from sole_r1_ros.backends.transformers_backend import TransformersBackend
from sole_r1_ros.cli import score_bag
from sole_r1_ros.errors import InferenceError, ModelLoadError
from sole_r1_ros.messages.bags import BagReader
from sole_r1_ros.offline import one_bag, outputs

FAST = ["--greedy", "--max-new-tokens", "24", "--quiet"]


@pytest.fixture(autouse=True)
def default_model(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOLE_R1_DEFAULT_MODEL", str(tiny_model_dir))


def score(bag: Path, out: Path, *extra: str) -> int:
    return score_bag.main([str(bag), "--out", str(out), "--rate", "3", *FAST, *extra])


def failing_model_calls(monkeypatch: pytest.MonkeyPatch,
                        failures: dict[int, BaseException]) -> dict[int, BaseException]:
    """The n-th model call (1-based) of this test raises ``failures[n]``; the others run the real
    model. Returns ``failures``: clear it to let every later call run."""
    real_generate = TransformersBackend.generate
    calls = {"n": 0}

    def generate(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] in failures:
            raise failures[calls["n"]]
        return real_generate(self, *a, **kw)

    monkeypatch.setattr(TransformersBackend, "generate", generate)
    return failures


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "estimates.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_scores_a_bag_and_writes_every_output(tmp_path: Path, storage: str) -> None:
    bag = write_bag(tmp_path / "bag", storage=storage)
    out = tmp_path / "out"
    assert score(bag, out) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "estimates.csv", "estimates.jsonl", "plot.png", "results", "summary.json"
    ]
    assert not (tmp_path / "out.partial").exists()
    r = rows(out)
    # 30 frames at 15 Hz scored at 3 Hz: stamps 0, 5, 10, 15, 20, 25 frames in
    assert [x["stamp_ns"] for x in r] == [T0 + i * 66_666_667 for i in (0, 5, 10, 15, 20, 25)]
    assert r[0]["status"] == "first_frame" and r[0]["progress"] == 0.0
    assert all(x["schema"] == "sole_r1_ros/estimate/1" for x in r)
    assert all(x["views"] == {"external": x["stamp_ns"], "wrist": x["stamp_ns"]} for x in r)
    assert [x["step"] for x in r] == list(range(6)) and len({x["episode_id"] for x in r}) == 1
    assert r[-1]["ground_truth"] == pytest.approx(25 / 29, abs=1e-6)
    assert r[0]["goal"] == "push the red block into the green zone"
    with (out / "estimates.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 6
    summary = json.loads((out / "summary.json").read_text())
    assert summary["estimates"] == 6 and summary["model"]["model_type"] == "qwen3_vl"
    with BagReader(out / "results") as results:
        assert results.counts["/sole_r1_reward/estimate"] == 6
        assert results.counts["/sole_r1_reward/progress"] == 6
        estimates = [m for m in results.messages(["/sole_r1_reward/estimate"])]
        assert [m.log_time_ns for m in estimates] == [x["stamp_ns"] for x in r]
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compressed_single_camera_and_goal_override(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "bag", roles=("wrist",), compressed=True, goal=None, ground_truth=False)
    out = tmp_path / "out"
    assert score(bag, out, "--goal", "lift the cube", "--no-plot") == 0
    r = rows(out)
    assert r[0]["goal"] == "lift the cube" and list(r[0]["views"]) == ["external"]
    assert not (out / "plot.png").exists()


def test_explicit_cameras_set_row_order(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "bag")
    out = tmp_path / "out"
    assert score(
        bag, out, "--camera", "wrist=/camera/wrist/image_raw", "--camera", "external=/camera/external/image_raw"
    ) == 0
    assert list(rows(out)[0]["views"]) == ["wrist", "external"]


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (lambda p: write_bag(p, goal=None), [], "no goal"),
        (lambda p: write_bag(p), ["--camera", "external=/nope"], "not in the bag"),
        (lambda p: write_bag(p, encoding="yuv444"), [], "unknown_encoding"),
        (lambda p: p, [], "does not exist"),
    ],
)
def test_bad_input_fails_clearly_without_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make, args, message
) -> None:
    bag = make(tmp_path / "bag")
    out = tmp_path / "out"
    assert score(bag, out, *args) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "out.partial").exists()


def test_truncated_bag_fails_clearly_without_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bag = write_bag(tmp_path / "bag", storage="mcap")
    data_file = next(bag.glob("*.mcap"))
    data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])
    out = tmp_path / "out"
    assert score(bag, out) == 2
    assert "error:" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "out.partial").exists()


def test_existing_output_is_not_overwritten_without_flag(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "bag", n=8)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert score(bag, out) == 2
    assert (out / "keep.txt").read_text() == "mine"
    assert score(bag, out, "--overwrite") == 0 and not (out / "keep.txt").exists()


def test_interrupt_then_resume_gives_the_uninterrupted_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bag = write_bag(tmp_path / "bag")
    reference = tmp_path / "reference"
    assert score(bag, reference) == 0

    failing = failing_model_calls(monkeypatch, {4: KeyboardInterrupt()})  # the 4th call is interrupted (Ctrl-C)
    out = tmp_path / "out"
    assert score(bag, out) == 130
    assert not out.exists()
    journal = (tmp_path / "out.partial" / "journal.jsonl").read_text().splitlines()
    assert len(journal) == 1 + 3  # fingerprint + three finished model steps

    failing.clear()
    assert score(bag, out) == 0
    strip = lambda rs: [{k: v for k, v in x.items() if k not in ("timings", "episode_id")} for x in rs]  # noqa: E731
    assert strip(rows(out)) == strip(rows(reference))
    assert not (tmp_path / "out.partial").exists()


def test_a_failed_call_before_the_interrupt_never_shifts_replies_onto_other_frames(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The 2nd call fails (a server timeout, say: not journaled), the 5th is interrupted. The
    resume asks the failed step again, so the journal parts from the run there: its later
    replies must not be handed to the frames after it."""
    bag = write_bag(tmp_path / "bag")
    reference = tmp_path / "reference"
    assert score(bag, reference) == 0
    failing = failing_model_calls(monkeypatch, {2: InferenceError("server timed out"), 5: KeyboardInterrupt()})
    out = tmp_path / "out"
    assert score(bag, out) == 130
    failing.clear()
    assert score(bag, out) == 0
    strip = lambda rs: [{k: v for k, v in x.items() if k not in ("timings", "episode_id")} for x in rs]  # noqa: E731
    assert strip(rows(out)) == strip(rows(reference))  # the same as a run that never failed
    assert json.loads((out / "summary.json").read_text())["replayed_steps"] == 1  # only the call before the failure


def test_changed_settings_do_not_resume_a_stale_journal(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "bag", n=10)
    partial = tmp_path / "out.partial"
    partial.mkdir()
    (partial / "journal.jsonl").write_text(json.dumps({"fingerprint": "something-else"}) + "\n"
                                           + json.dumps({"text": "<answer>99%</answer>", "prompt_tokens": 1,
                                                         "new_tokens": 1}) + "\n")
    assert score(bag, tmp_path / "out") == 0
    assert all(x["percent"] != 99 for x in rows(tmp_path / "out"))


def test_disk_full_while_writing_leaves_nothing_that_looks_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bag = write_bag(tmp_path / "bag", n=8)

    def full(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs, "plot", full)
    out = tmp_path / "out"
    assert score(bag, out) == 2
    assert not out.exists()
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert leftovers in (["bag"], ["bag", "out.partial"])  # at most the resumable work folder


SAMPLED = ["--max-new-tokens", "24", "--quiet"]  # the release's sampling, not greedy
VOLATILE = ("timings", "episode_id")


def stable(rs: list[dict]) -> list[dict]:
    return [{k: v for k, v in x.items() if k not in VOLATILE} for x in rs]


def test_reward_settings_reach_the_outputs(tmp_path: Path) -> None:
    from sole_r1_ros.core.reward import RewardMapper
    from sole_r1_ros.settings.groups import RewardSettings

    bag = write_bag(tmp_path / "bag")
    out = tmp_path / "out"
    assert score(bag, out, "--reward-mode", "delta", "--reward-smoothing", "ema", "--reward-ema-alpha", "0.7",
                 "--reward-success-threshold", "0.5", "--reward-success-bonus", "1", "--reward-clip",
                 "--reward-clip-min", "-0.2", "--reward-clip-max", "0.8", "--reward-gamma", "0.9",
                 "--reward-median-window", "5") == 0
    settings = RewardSettings(mode="delta", smoothing="ema", ema_alpha=0.7, success_threshold=0.5, success_bonus=1.0,
                              clip=True, clip_min=-0.2, clip_max=0.8, gamma=0.9, median_window=5)
    r = rows(out)
    mapper = RewardMapper(settings)
    assert [x["reward"] for x in r] == pytest.approx([mapper.step(x["progress"]) for x in r])
    assert all(-0.2 <= x["reward"] <= 0.8 for x in r)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reward"] == {"mode": "delta", "gamma": 0.9, "smoothing": "ema", "ema_alpha": 0.7,
                                 "median_window": 5, "success_threshold": 0.5, "success_bonus": 1.0, "clip": True,
                                 "clip_min": -0.2, "clip_max": 0.8}
    mapper = RewardMapper(RewardSettings(mode="potential", gamma=0.5, smoothing="median", median_window=2))
    assert score(bag, tmp_path / "out2", "--reward-mode", "potential", "--reward-gamma", "0.5",
                 "--reward-smoothing", "median", "--reward-median-window", "2", "--no-reward-clip") == 0
    r2 = rows(tmp_path / "out2")
    assert [x["reward"] for x in r2] == pytest.approx([mapper.step(x["progress"]) for x in r2])


def test_default_runs_are_seeded_and_reproducible(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "bag")
    a, b, unseeded = tmp_path / "a", tmp_path / "b", tmp_path / "unseeded"
    assert score_bag.main([str(bag), "--out", str(a), "--rate", "3", *SAMPLED]) == 0
    assert score_bag.main([str(bag), "--out", str(b), "--rate", "3", *SAMPLED]) == 0
    assert stable(rows(a)) == stable(rows(b))
    assert len({x["reasoning"] for x in rows(a)[1:]}) > 1  # sampled: steps are not copies of one another
    summary = json.loads((a / "summary.json").read_text())
    assert summary["seed"] == 0 and summary["decoding"]["seed"] == 0
    assert summary["decoding"]["do_sample"] is True and summary["decoding"]["temperature"] == 1.0
    assert summary["decoding"]["top_p"] == 0.9 and summary["decoding"]["top_k"] == 50
    assert score_bag.main([str(bag), "--out", str(unseeded), "--rate", "3", "--seed", "-1", *SAMPLED]) == 0
    summary = json.loads((unseeded / "summary.json").read_text())
    assert summary["seed"] is None and summary["decoding"]["seeding"] == "unseeded"


def test_summary_records_goal_text_and_topics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bag = write_bag(tmp_path / "bag", goal_topic="/task_goal", goal_changes=[(15, "lift the red block")],
                    strings={"/status": "idle"})
    out = tmp_path / "out"
    assert score(bag, out) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["goal"] == "push the red block into the green zone"
    assert summary["goals"] == ["push the red block into the green zone", "lift the red block"]
    assert summary["topics"] == {
        "cameras": {"external": "/camera/external/image_raw", "wrist": "/camera/wrist/image_raw"},
        "goal": "/task_goal", "ground_truth": "/ground_truth/progress",
    }
    assert summary["goal_source"].startswith("auto-detected")
    assert summary["final_ground_truth"] == round(25 / 29, 4)  # a float32 in the bag, rounded
    for key in ("final_progress", "max_progress", "final_ground_truth", "mean_model_s"):
        assert summary[key] == round(summary[key], 4)
    last = capsys.readouterr().out.splitlines()[-2]
    assert f"ground truth {25 / 29:.2f};" in last and "seed 0" in last
    assert "e-" not in last and "0.862068" not in last


def test_quiet_prints_no_progress_bars(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()  # whatever an earlier test in this process left behind
    try:
        bag = write_bag(tmp_path / "bag", n=6)
        assert score(bag, tmp_path / "quiet") == 0  # FAST has --quiet
        err = capfd.readouterr().err
        assert "Loading weights" not in err and "it/s" not in err and "\r" not in err
        assert hf_logging.is_progress_bar_enabled()  # restored afterwards
        assert score_bag.main([str(bag), "--out", str(tmp_path / "loud"), "--rate", "3", "--greedy",
                               "--max-new-tokens", "8"]) == 0
        assert "Loading weights" in capfd.readouterr().err  # what --quiet silences
    finally:
        if not was_enabled:
            hf_logging.disable_progress_bar()


def test_interrupt_once_outputs_are_complete_exits_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bag = write_bag(tmp_path / "bag", n=8)

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(score_bag, "print_summary", interrupted)
    out = tmp_path / "out"
    assert score(bag, out) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "estimates.csv", "estimates.jsonl", "plot.png", "results", "summary.json"
    ]
    assert not (tmp_path / "out.partial").exists()

    def interrupted_after_rename(partial: Path, target: Path) -> None:  # Ctrl-C right after the rename
        outputs.os.replace(partial, target)
        raise KeyboardInterrupt

    monkeypatch.setattr(one_bag, "commit", interrupted_after_rename)
    out2 = tmp_path / "out2"
    assert score(bag, out2) == 0
    assert sorted(p.name for p in out2.iterdir()) == [
        "estimates.csv", "estimates.jsonl", "plot.png", "results", "summary.json"
    ]  # the journal the rename carried along is gone, as after an uninterrupted commit
    assert not (tmp_path / "out2.partial").exists()


def test_a_model_that_fails_to_load_on_the_re_run_keeps_the_finished_steps(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    bag = write_bag(tmp_path / "bag")
    failing_model_calls(monkeypatch, {3: KeyboardInterrupt()})
    out = tmp_path / "out"
    assert score(bag, out) == 130
    journal = tmp_path / "out.partial" / "journal.jsonl"
    before = journal.read_text()
    monkeypatch.setattr(TransformersBackend, "__init__", lambda self, options: (_ for _ in ()).throw(
        ModelLoadError("the GPU is busy")))
    capsys.readouterr()
    assert score(bag, out) == 2
    err = capsys.readouterr().err
    assert "the GPU is busy" in err and "re-run the same command to resume" in err
    assert journal.read_text() == before


def test_the_fingerprint_ignores_how_the_model_is_reached(tmp_path: Path) -> None:
    """A re-run with a longer timeout or more retries resumes; one that decodes differently does not."""
    from dataclasses import replace

    from sole_r1_ros.offline.bag_scoring import ScoringSettings, run_fingerprint
    from sole_r1_ros.offline.plan import plan_scoring
    from sole_r1_ros.settings.groups import DecodingSettings, ModelSettings

    plan = plan_scoring(write_bag(tmp_path / "bag", n=8), cameras=None, goal="g", goal_topic=None,
                        ground_truth_topic=None, max_goal_chars=1000)
    base = ScoringSettings(model=ModelSettings(backend="server", url="http://gpu:8000"))
    same = replace(base, model=replace(base.model, timeout_s=600.0, retries=9, max_concurrency=2, startup_wait_s=1.0))
    other = replace(base, decoding=DecodingSettings(max_new_tokens=64))
    assert run_fingerprint(plan, same) == run_fingerprint(plan, base)
    assert run_fingerprint(plan, other) != run_fingerprint(plan, base)
    assert run_fingerprint(plan, replace(base, model=replace(base.model, name="other-model"))) != run_fingerprint(
        plan, base)
