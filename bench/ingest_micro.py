#!/usr/bin/env python3
"""Intrinsic per-message ingest costs, single thread, no DDS, no model (the floor under
``ingest_bench.py``'s numbers, which add GIL waits and a loaded machine).

Per message kind (640x480 rgb8 Image, 1280x720 JPEG CompressedImage) it times:

* ``typed take``  - what rclpy does for a typed subscription after the middleware hands over the
                    bytes: ``deserialize_message`` (CDR -> C struct -> Python message, data copied
                    into an ``array.array``), all under the GIL
* ``raw take``    - what a ``raw=True`` subscription does instead: one ``bytes`` copy
* ``node cb``     - the production callback: ``stamp_to_ns`` + ``RewardWorker.push_frame``
* ``naive cb``    - ``decode_any`` + the same push
* ``raw cb``      - stamp read from the CDR bytes + push of the bytes (deserialised later, if scored)
* ``deser scored``- deserialising one scored frame later (raw variant, worker thread)
* ``decode``      - ``decode_any`` of one frame (worker thread, every variant)

    .venv/bin/python bench/ingest_micro.py --n 2000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def stats(fn, n: int) -> tuple[float, float, float]:
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2] * 1e3, ts[int(0.99 * (len(ts) - 1))] * 1e3, sum(ts) / len(ts) * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args(argv)

    from rclpy.serialization import deserialize_message, serialize_message

    import bench_publisher
    from ingest_bench import RawMsg, cdr_stamp_ns
    from sole_r1_ros.messages.image_codec import decode_any, stamp_to_ns
    from sole_r1_ros.pipeline.frame_buffer import FrameSelector
    from sole_r1_ros.pipeline.worker import RewardWorker
    from sole_r1_ros.settings.groups import RewardSettings, WorkerSettings

    def measure(label: str, transport: str, w: int, h: int) -> dict:
        msg = bench_publisher.build_messages(0, transport, w, h, 1)[0]
        msg.header.stamp.sec = 1_700_000_000
        mtype = type(msg)
        data = serialize_message(msg)
        worker = RewardWorker(None, FrameSelector.create(["cam0"], 30), config=WorkerSettings(),  # type: ignore[arg-type]
                              reward_config=RewardSettings(), clock=time.time_ns, emit=lambda r: None)
        state = {"stamp": 1_700_000_000 * 10**9}

        def next_stamp():
            state["stamp"] += 33_000_000
            return state["stamp"]

        typed = [deserialize_message(data, mtype) for _ in range(64)]
        for m in typed:
            m.header.stamp.sec = 1_700_000_000
        i = {"k": 0}

        def cb_node():
            m = typed[i["k"] % 64]
            i["k"] += 1
            worker.push_frame("cam0", stamp_to_ns(m.header.stamp) + next_stamp(), m, time.time_ns())

        def cb_naive():
            m = typed[i["k"] % 64]
            i["k"] += 1
            decode_any(m)
            worker.push_frame("cam0", stamp_to_ns(m.header.stamp) + next_stamp(), m, time.time_ns())

        def cb_raw():
            worker.push_frame("cam0", cdr_stamp_ns(data) + next_stamp(), RawMsg(data, mtype), time.time_ns())

        n = args.n
        nd = max(50, n // 10)  # decodes are slow
        r = {
            "kind": label, "bytes": len(data),
            "typed take": stats(lambda: deserialize_message(data, mtype), n),
            "raw take": stats(lambda: bytes(bytearray(data)), n),
            "node cb": stats(cb_node, n),
            "naive cb": stats(cb_naive, nd),
            "raw cb": stats(cb_raw, n),
            "deser scored": stats(lambda: deserialize_message(data, mtype), n),
            "decode": stats(lambda: decode_any(typed[0]), nd),
        }
        return r

    rows = [measure(label, transport, w, h)
            for label, transport, w, h in (("640x480 rgb8 Image", "raw", 640, 480),
                                           ("1280x720 JPEG CompressedImage", "compressed", 1280, 720))]
    cols = ["typed take", "raw take", "node cb", "naive cb", "raw cb", "deser scored", "decode"]
    print("| message | bytes | " + " | ".join(f"{c} p50 / p99" for c in cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for r in rows:
        print(f"| {r['kind']} | {r['bytes']} | " + " | ".join(f"{r[c][0]:.3f} / {r[c][1]:.3f}" for c in cols) + " |")
    print("\n(ms per message, single thread; 'typed take'/'raw take' model the GIL-held part of rclpy's take:"
          " deserialize_message vs a bytes copy)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
