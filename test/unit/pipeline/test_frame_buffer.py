"""Tests for sole_r1_ros.pipeline.frame_buffer (pure Python, no ROS graph)."""

from __future__ import annotations

import random
import threading
import time

import pytest

from sole_r1_ros.core.status import EstimateStatus
from sole_r1_ros.pipeline.frame_buffer import (
    CameraBuffer,
    FrameSelector,
    Selection,
    SelectionFailure,
    StampedFrame,
    ViewAligner,
)

MS = 1_000_000
S = 1_000_000_000


def stamps(buf: CameraBuffer) -> list[int]:
    return [f.stamp_ns for f in buf.snapshot()]


def make_selector(maxlen: int = 16) -> FrameSelector:
    return FrameSelector.create(["external", "wrist"], maxlen)


# --------------------------------------------------------------------------- CameraBuffer


def test_stamped_frame_is_frozen() -> None:
    frame = StampedFrame(1, object(), 2)
    with pytest.raises(AttributeError):
        frame.stamp_ns = 5  # type: ignore[misc]


def test_bounded_memory_and_overflow_count() -> None:
    buf = CameraBuffer(8)
    for i in range(10_000):
        buf.push(i * MS, f"msg{i}", i * MS + 7)
    assert len(buf) == 8
    assert stamps(buf) == [i * MS for i in range(9_992, 10_000)]
    st = buf.stats()
    assert st["received"] == 10_000
    assert st["evicted"] == 9_992
    assert st["dropped_by_overflow"] == 9_992
    assert st["out_of_order"] == 0
    assert st["len"] == 8 and st["maxlen"] == 8
    assert buf.last_received_ns == 9_999 * MS + 7


def test_dropped_by_overflow_only_counts_unconsidered_frames() -> None:
    buf = CameraBuffer(4)
    for i in range(4):
        buf.push(i, None, i)
    assert buf.latest().stamp_ns == 3
    for i in range(4, 8):
        buf.push(i, None, i)
    assert buf.evicted == 4 and buf.dropped_by_overflow == 0
    for i in range(8, 12):
        buf.push(i, None, i)
    assert buf.evicted == 8 and buf.dropped_by_overflow == 4
    assert buf.nearest(9, 0).stamp_ns == 9
    buf.push(12, None, 12)
    buf.push(13, None, 13)
    assert buf.evicted == 10 and buf.dropped_by_overflow == 4


def test_peek_latest_does_not_mark_considered() -> None:
    buf = CameraBuffer(1)
    buf.push(1, None, 1)
    assert buf.peek_latest().stamp_ns == 1
    buf.push(2, None, 2)
    assert buf.dropped_by_overflow == 1


def test_invalid_maxlen() -> None:
    with pytest.raises(ValueError):
        CameraBuffer(0)


def test_latest_and_empty() -> None:
    buf = CameraBuffer(4)
    assert buf.latest() is None
    assert buf.nearest(0, 10**12) is None
    assert buf.last_received_ns is None
    msg = object()
    frame = buf.push(5, msg, 6)
    assert buf.latest() is frame
    assert frame.msg is msg and frame.received_ns == 6


def test_nearest_with_tolerance() -> None:
    buf = CameraBuffer(8)
    for s in (0, 100, 200):
        buf.push(s, s, s)
    assert buf.nearest(140, 50).stamp_ns == 100
    assert buf.nearest(160, 50).stamp_ns == 200
    assert buf.nearest(150, 50).stamp_ns == 200  # tie prefers the newer frame
    assert buf.nearest(260, 50) is None
    assert buf.nearest(250, 50).stamp_ns == 200
    assert buf.nearest(-50, 50).stamp_ns == 0
    assert buf.nearest(-51, 50) is None
    assert buf.nearest(100, 0).stamp_ns == 100
    assert buf.nearest(101, 0) is None
    with pytest.raises(ValueError):
        buf.nearest(100, -1)


def test_out_of_order_kept_sorted() -> None:
    buf = CameraBuffer(8)
    for s in (100, 300, 200, 50, 300, 400):
        buf.push(s, None, 0)
    assert stamps(buf) == [50, 100, 200, 300, 300, 400]
    assert buf.out_of_order == 2
    assert buf.latest().stamp_ns == 400
    assert buf.nearest(190, 20).stamp_ns == 200


def test_out_of_order_into_full_buffer() -> None:
    buf = CameraBuffer(3)
    for s in (100, 200, 300):
        buf.push(s, None, 0)
    buf.push(50, "late", 0)
    assert stamps(buf) == [100, 200, 300]
    assert buf.out_of_order == 1 and buf.evicted == 1 and buf.received == 4
    buf.push(250, "mid", 0)
    assert stamps(buf) == [200, 250, 300]
    assert buf.out_of_order == 2 and buf.evicted == 2
    assert buf.received == len(buf) + buf.evicted


def test_latest_is_newest_stamp_not_last_arrival() -> None:
    buf = CameraBuffer(4)
    buf.push(200, "new", 1)
    buf.push(100, "old", 2)
    assert buf.latest().msg == "new"
    assert buf.last_received_ns == 2


def test_last_received_is_monotonic_max() -> None:
    buf = CameraBuffer(4)
    buf.push(1, None, 50)
    buf.push(2, None, 40)
    assert buf.last_received_ns == 50


def test_clear_keeps_counters() -> None:
    buf = CameraBuffer(2)
    for s in range(5):
        buf.push(s, None, s + 10)
    buf.clear()
    assert len(buf) == 0 and buf.latest() is None
    assert buf.received == 5 and buf.evicted == 3
    assert buf.last_received_ns == 14
    assert buf.stats()["newest_stamp_ns"] is None


def test_push_frame() -> None:
    buf = CameraBuffer(2)
    frame = StampedFrame(7, "m", 8)
    buf.push_frame(frame)
    assert buf.latest() is frame


# --------------------------------------------------------------------------- FrameSelector


def test_no_frames() -> None:
    sel = make_selector()
    result = sel.select(None, tolerance_ns=10 * MS, max_age_ns=S, now_ns=0)
    assert isinstance(result, SelectionFailure)
    assert result.reason == "no_frames" and not result.ok
    assert result.status is EstimateStatus.NO_FRAMES and result.role is None


@pytest.mark.parametrize("present", ["external", "wrist"])
def test_view_missing(present: str) -> None:
    sel = make_selector()
    sel.push(present, 1 * S, "m", 1 * S)
    missing = "wrist" if present == "external" else "external"
    result = sel.select(None, tolerance_ns=10 * MS, max_age_ns=S, now_ns=1 * S)
    assert isinstance(result, SelectionFailure)
    assert result.reason == f"view_missing:{missing}"
    assert result.status is EstimateStatus.VIEW_MISSING and result.role == missing
    assert missing in result.detail


def test_select_latest_aligned() -> None:
    sel = make_selector()
    for t in (1000, 2000):
        sel.push("external", t * MS, f"ext{t}", t * MS)
    for t in (995, 1990, 2500):
        sel.push("wrist", t * MS, f"wr{t}", t * MS)
    result = sel.select(None, tolerance_ns=20 * MS, max_age_ns=S, now_ns=2010 * MS)
    assert isinstance(result, Selection) and result.ok
    assert result.stamp_ns == 2000 * MS
    assert result.frames["external"].msg == "ext2000"
    assert result.frames["wrist"].msg == "wr1990"
    assert list(result.frames) == ["external", "wrist"]
    assert result.max_skew_ns == 10 * MS


def test_select_target_stamp() -> None:
    sel = make_selector()
    for t in (1000, 2000, 3000):
        sel.push("external", t * MS, f"ext{t}", t * MS)
        sel.push("wrist", (t + 5) * MS, f"wr{t}", t * MS)
    result = sel.select(1990 * MS, tolerance_ns=20 * MS, max_age_ns=10 * S, now_ns=3000 * MS)
    assert isinstance(result, Selection)
    assert result.stamp_ns == 2000 * MS
    assert result.frames["wrist"].msg == "wr2000"


def test_not_aligned_other_view() -> None:
    sel = make_selector()
    sel.push("external", 2000 * MS, "e", 0)
    sel.push("wrist", 2500 * MS, "w", 0)
    result = sel.select(None, tolerance_ns=50 * MS, max_age_ns=S, now_ns=2500 * MS)
    assert isinstance(result, SelectionFailure)
    assert result.reason == "not_aligned:wrist"


def test_not_aligned_reference_for_target() -> None:
    sel = make_selector()
    sel.push("external", 2000 * MS, "e", 0)
    sel.push("wrist", 2000 * MS, "w", 0)
    result = sel.select(1000 * MS, tolerance_ns=50 * MS, max_age_ns=S, now_ns=2000 * MS)
    assert isinstance(result, SelectionFailure)
    assert result.reason == "not_aligned:external"


def test_stale_reference() -> None:
    sel = make_selector()
    sel.push("external", 1 * S, "e", 1 * S)
    sel.push("wrist", 1 * S, "w", 1 * S)
    now = 1 * S + 500 * MS
    assert isinstance(sel.select(None, tolerance_ns=10 * MS, max_age_ns=500 * MS, now_ns=now), Selection)
    result = sel.select(None, tolerance_ns=10 * MS, max_age_ns=499 * MS, now_ns=now)
    assert isinstance(result, SelectionFailure)
    assert result.reason == "stale:external"


def test_stale_other_view_that_stopped_publishing() -> None:
    sel = make_selector()
    sel.push("wrist", 1 * S, "w", 1 * S)
    sel.push("external", 10 * S, "e", 10 * S)
    result = sel.select(None, tolerance_ns=50 * MS, max_age_ns=1 * S, now_ns=10 * S + 10 * MS)
    assert isinstance(result, SelectionFailure)
    assert result.reason == "stale:wrist"


def test_stale_aligned_frame_of_other_view() -> None:
    sel = make_selector()
    sel.push("external", 1000 * MS, "e", 0)
    sel.push("wrist", 950 * MS, "w", 0)
    result = sel.select(None, tolerance_ns=100 * MS, max_age_ns=1000 * MS, now_ns=1990 * MS)
    assert isinstance(result, SelectionFailure)
    assert result.reason == "stale:wrist"


def test_max_age_none_disables_staleness() -> None:
    sel = make_selector()
    sel.push("external", 1, "e", 1)
    sel.push("wrist", 1, "w", 1)
    assert isinstance(sel.select(None, tolerance_ns=0, max_age_ns=None, now_ns=100 * S), Selection)


def test_future_stamps_are_not_stale() -> None:
    sel = make_selector()
    sel.push("external", 5 * S, "e", 0)
    sel.push("wrist", 5 * S, "w", 0)
    assert isinstance(sel.select(None, tolerance_ns=0, max_age_ns=0, now_ns=1 * S), Selection)


def test_single_role_selector_and_alias() -> None:
    sel = ViewAligner.create(["external"], 4)
    assert sel.reference_role == "external" and sel.roles == ("external",)
    sel.push("external", 10, "e", 10)
    result = sel.select(None, tolerance_ns=0, max_age_ns=100, now_ns=20)
    assert isinstance(result, Selection) and list(result.frames) == ["external"]


def test_selector_construction_errors() -> None:
    with pytest.raises(ValueError):
        FrameSelector({})
    with pytest.raises(ValueError):
        FrameSelector.create(["a", "a"], 4)
    with pytest.raises(KeyError):
        make_selector().push("nope", 1, None, 1)


def test_reference_is_first_role_in_mapping() -> None:
    sel = FrameSelector({"wrist": CameraBuffer(4), "external": CameraBuffer(4)})
    assert sel.reference_role == "wrist"
    assert sel["external"] is sel.buffer("external")


def test_reference_failure_names_only_the_reference_camera() -> None:
    sel = FrameSelector.create(["external", "wrist", "top"], 4)
    none_yet = sel.reference_failure(max_age_ns=S, now_ns=0)
    assert none_yet is not None and none_yet.reason == "no_frames" and none_yet.views == {}
    sel.push("wrist", 5 * S, "w", 5 * S)
    missing = sel.reference_failure(max_age_ns=S, now_ns=5 * S)
    assert missing is not None and missing.reason == "view_missing:external" and missing.views == {"wrist": 5 * S}
    sel.push("external", 10 * S, "e", 10 * S)
    assert sel.reference_failure(max_age_ns=S, now_ns=10 * S) is None  # 'top' missing is a step's to report
    stale = sel.reference_failure(max_age_ns=S, now_ns=12 * S)
    assert stale is not None and stale.reason == "stale:external" and stale.stamp_ns == 10 * S
    assert stale.views == {"external": 10 * S, "wrist": 5 * S} and "is 2000000000 ns old" in stale.detail


def test_stats() -> None:
    sel = FrameSelector.create(["external", "wrist", "top"], 4)
    sel.push("external", 10 * S, "e", 10 * S)
    sel.push("wrist", 5 * S, "w", 5 * S)
    stats = sel.stats()
    assert set(stats) == {"external", "wrist", "top"}
    assert stats["external"]["received"] == 1
    assert stats["external"]["newest_stamp_ns"] == 10 * S
    assert stats["top"]["len"] == 0 and stats["top"]["last_received_ns"] is None


def test_select_never_raises_on_random_states() -> None:
    rng = random.Random(1234)
    for _ in range(500):
        sel = FrameSelector.create(["a", "b", "c"], rng.randint(1, 5))
        for _ in range(rng.randint(0, 12)):
            sel.push(rng.choice("abc"), rng.randint(0, 1000), None, rng.randint(0, 1000))
        target = rng.choice([None, rng.randint(-100, 1100)])
        result = sel.select(
            target, tolerance_ns=rng.randint(0, 100), max_age_ns=rng.choice([None, rng.randint(0, 1000)]),
            now_ns=rng.randint(0, 2000),
        )
        assert isinstance(result, (Selection, SelectionFailure))
        if isinstance(result, Selection):
            assert set(result.frames) == {"a", "b", "c"}
        else:
            assert result.status.value in {"no_frames", "view_missing", "stale", "not_aligned"}


def test_selector_clear() -> None:
    sel = make_selector()
    sel.push("external", 1, "e", 1)
    sel.clear()
    assert sel.select(None, tolerance_ns=0, max_age_ns=None, now_ns=1).reason == "no_frames"


# --------------------------------------------------------------------------- threads


def test_thread_safety_smoke() -> None:
    sel = FrameSelector.create(["external", "wrist"], 8)
    stop = threading.Event()
    errors: list[BaseException] = []
    pushed = {"external": 0, "wrist": 0}
    selections = [0]

    def writer() -> None:
        rng = random.Random(0)
        i = 0
        try:
            while not stop.is_set():
                t = i * 10 * MS
                sel.push("external", t + rng.randint(-15, 15) * MS, i, t)
                pushed["external"] += 1
                sel.push("wrist", t + rng.randint(-3, 3) * MS, i, t)
                pushed["wrist"] += 1
                i += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def reader() -> None:
        try:
            while not stop.is_set():
                ext = sel.buffer("external")
                latest = ext.latest()
                if latest is not None:
                    ext.nearest(latest.stamp_ns - 20 * MS, 10 * MS)
                    result = sel.select(None, tolerance_ns=10 * MS, max_age_ns=None, now_ns=latest.stamp_ns)
                    assert isinstance(result, (Selection, SelectionFailure))
                    selections[0] += 1
                snap = ext.snapshot()
                assert [f.stamp_ns for f in snap] == sorted(f.stamp_ns for f in snap)
                assert len(snap) <= 8
                sel.stats()
                sel.reference_failure(max_age_ns=S, now_ns=0)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for th in threads:
        th.start()
    time.sleep(0.2)
    stop.set()
    for th in threads:
        th.join(timeout=10)
    assert not any(th.is_alive() for th in threads)
    assert errors == []
    for role, count in pushed.items():
        st = sel.stats()[role]
        assert count > 0
        assert st["received"] == count
        assert st["received"] == st["len"] + st["evicted"]
        assert st["dropped_by_overflow"] <= st["evicted"]
        assert st["len"] == min(8, count)


def test_byte_budget_bounds_memory_for_huge_frames() -> None:
    from types import SimpleNamespace

    from sole_r1_ros.pipeline.frame_buffer import CameraBuffer

    buf = CameraBuffer(30, name="cam", max_bytes=250)
    for i in range(10):
        buf.push(i, SimpleNamespace(data=b"x" * 100), i)
    assert len(buf) == 2 and buf.stats()["bytes"] == 200
    assert buf.evicted == 8 and buf.latest().stamp_ns == 9
    giant = CameraBuffer(30, max_bytes=10)
    giant.push(0, SimpleNamespace(data=b"x" * 1000), 0)
    assert len(giant) == 1  # the newest frame is always kept, whatever its size


def test_byte_total_stays_exact_under_random_pushes() -> None:
    import random
    from types import SimpleNamespace

    from sole_r1_ros.pipeline.frame_buffer import CameraBuffer

    rng = random.Random(0)
    buf = CameraBuffer(7, max_bytes=3000)
    for i in range(2000):
        buf.push(rng.randrange(0, 5000), SimpleNamespace(data=b"x" * rng.randrange(1, 900)), i)
        assert buf.stats()["bytes"] == sum(len(f.msg.data) for f in buf.snapshot())
        assert buf.stats()["bytes"] <= 3000 or len(buf) == 1
    buf.clear()
    assert buf.stats()["bytes"] == 0
