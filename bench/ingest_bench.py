#!/usr/bin/env python3
"""Ingest benchmark: what does one camera message cost the reward node, and does it drop any?

For every scenario (cameras x transport) and every variant, a fresh subscriber process runs the
real ``RewardNode`` (tiny random Qwen3-VL, rate mode, ``period`` 0 so the model runs back to back)
and a separate publisher process (``bench/bench_publisher.py``) sends RELIABLE images at 30 Hz.

Variants (same run, same publisher settings):

* ``node``  - the production node: typed subscription, callback stores the message
              (``RewardWorker.push_frame``); the worker decodes only the frames it scores.
* ``naive`` - same, but the callback decodes every frame (``decode_any``) before storing it.
* ``raw``   - ``create_subscription(..., raw=True)``: the callback reads the header stamp straight
              from the CDR bytes and stores the bytes; the worker deserialises
              (``rclpy.serialization.deserialize_message``) only the frames it scores.

* ``raw_profile`` - ``raw`` with the callback's parts timed separately (diagnostics; extra
              ``part_*`` keys in the JSON). ``BENCH_CPROFILE=1`` in the environment profiles the
              executor thread of the node process (diagnostics).

Measured in the subscriber process with an instrumented ``SingleThreadedExecutor``:
``take`` = rclpy's take (incl. deserialisation to a Python message, under the GIL),
``cb`` = the node's image callback, ``total`` = take + cb, per message, p50/p99/max in ms;
CPU share (% of one core) of the whole process, the executor thread and the inference thread;
messages published / received, sequence gaps (= drops), estimates produced.

    .venv/bin/python bench/ingest_bench.py                 # all scenarios, 20 s each
    .venv/bin/python bench/ingest_bench.py --duration 30 --scenarios 3x640x480raw --variants node raw
    .venv/bin/python bench/ingest_bench.py --no-model | --switch-interval 0.0005 | --qos-depth 30
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCENARIOS = {
    "1x640x480raw": (1, "raw", 640, 480),
    "3x640x480raw": (3, "raw", 640, 480),
    "1x1280x720jpeg": (1, "compressed", 1280, 720),
    "3x1280x720jpeg": (3, "compressed", 1280, 720),
}
VARIANTS = ("node", "naive", "raw", "raw_profile")


def bench_env(domain: int) -> dict[str, str]:
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(domain)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


# ------------------------------------------------------------------------------------------
# subscriber side (runs in its own process)
# ------------------------------------------------------------------------------------------
class RawMsg:
    """A serialized image as stored by the ``raw`` variant: ``data`` is the CDR bytes (so the
    buffer's byte accounting sees the right size) and ``msg_type`` says how to deserialise it."""

    __slots__ = ("data", "msg_type")

    def __init__(self, data: bytes, msg_type: type) -> None:
        self.data = data
        self.msg_type = msg_type


def install_lazy_decode() -> None:
    """Make the worker deserialise a :class:`RawMsg` right before decoding it, i.e. only for the
    frames it scores (what the production change would do in ``RewardWorker._score``)."""
    from rclpy.serialization import deserialize_message

    from sole_r1_ros.pipeline import worker as reward_worker

    decode = reward_worker.decode_any

    def decode_any(msg, **kw):
        if isinstance(msg, RawMsg):
            msg = deserialize_message(msg.data, msg.msg_type)
        return decode(msg, **kw)

    reward_worker.decode_any = decode_any


def cdr_stamp_ns(data: bytes) -> int:
    """header.stamp of a serialized sensor_msgs message (CDR, header first) without deserialising."""
    if data[1] == 1:  # CDR little endian
        sec, nsec = struct.unpack_from("<iI", data, 4)
    else:
        sec, nsec = struct.unpack_from(">iI", data, 4)
    return sec * 1_000_000_000 + nsec


def cdr_frame_id(data: bytes) -> str:
    (n,) = struct.unpack_from("<I" if data[1] == 1 else ">I", data, 12)
    return data[16:16 + n - 1].decode()


def thread_cpu_s(native_id: int) -> float:
    try:
        fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def run_subscriber(args: argparse.Namespace) -> None:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CompressedImage, Image

    from sole_r1_ros.messages.image_codec import decode_any, stamp_to_ns
    from sole_r1_ros.ros import reward_node

    if args.switch_interval > 0:
        sys.setswitchinterval(args.switch_interval)
    n_cams, transport = args.cameras, args.transport
    roles = [f"cam{i}" for i in range(n_cams)]
    msg_type = Image if transport == "raw" else CompressedImage
    variant = args.variant

    class BenchNode(reward_node.RewardNode):
        # the production callback factory takes (role, msg_type); keep the bench in step with it
        def _image_callback(self, role, msg_type_=None):
            push = self.worker.push_frame
            clock = self.get_clock()
            if variant == "naive":
                def callback(msg) -> None:
                    decode_any(msg)  # what a naive node does: decode every frame on arrival
                    push(role, stamp_to_ns(msg.header.stamp), msg, clock.now().nanoseconds)
            elif variant == "raw":
                def callback(data: bytes) -> None:
                    push(role, cdr_stamp_ns(data), RawMsg(data, msg_type), clock.now().nanoseconds)
            elif variant == "raw_profile":  # raw, with the callback's parts timed (diagnostics)
                def callback(data: bytes) -> None:
                    t0 = time.perf_counter()
                    stamp = cdr_stamp_ns(data)
                    t1 = time.perf_counter()
                    lazy = RawMsg(data, msg_type)
                    t2 = time.perf_counter()
                    now = clock.now().nanoseconds
                    frames = self.selector.buffer(role)._frames  # noqa: SLF001 - keep the evictee alive
                    old = frames[0] if len(frames) == frames.maxlen else None
                    t3 = time.perf_counter()
                    push(role, stamp, lazy, now)
                    t4 = time.perf_counter()
                    del old  # free the evicted frame outside "push"
                    t5 = time.perf_counter()
                    for k, a, b in (("stamp", t0, t1), ("lazy", t1, t2), ("now", t2, t3), ("push", t3, t4),
                                    ("free_evicted", t4, t5)):
                        parts.setdefault(k, []).append(b - a)
            else:
                return super()._image_callback(role, msg_type_ or msg_type)
            return callback

        def create_subscription(self, mtype, topic, callback, qos, **kw):
            if mtype in (Image, CompressedImage):  # production subscribes raw; "naive" is the typed one
                kw["raw"] = variant != "naive"
            return super().create_subscription(mtype, topic, callback, qos, **kw)

    parts: dict[str, list[float]] = {}
    if variant in ("raw", "raw_profile"):
        install_lazy_decode()
    rclpy.init()
    params = [
        Parameter("cameras", value=roles),
        Parameter("image_qos.reliability", value="reliable"),
        Parameter("goal", value="put the red block in the bowl"),
        Parameter("period", value=float(args.period)),
        Parameter("model.max_new_tokens", value=int(args.max_new_tokens)),
        Parameter("image_qos.depth", value=int(args.qos_depth)),
    ]
    if args.server_url:  # the model in a server process: the node is an HTTP client
        params += [Parameter("model.backend", value="server"), Parameter("model.url", value=args.server_url)]
    for r in roles:
        params += [Parameter(f"camera.{r}.topic", value=f"/bench/{r}"),
                   Parameter(f"camera.{r}.transport", value=transport)]
    node = BenchNode(parameter_overrides=params)
    if args.no_model:
        node.worker.stop()

    # per-message timing: wrap the image callbacks (cb) and the executor's take (take)
    stats = {"take": [], "cb": [], "total": []}
    seqs: dict[str, list[int]] = {r: [] for r in roles}
    image_subs = {}
    for sub in node.subscriptions:
        if sub.msg_type in (Image, CompressedImage):
            role = sub.topic_name.rsplit("/", 1)[-1]
            image_subs[id(sub)] = role
            inner = sub.callback

            def timed(msg, _inner=inner, _role=role):
                t0 = time.perf_counter()
                _inner(msg)
                dt = time.perf_counter() - t0
                state = window["state"]
                if state == "wait":
                    window["state"] = "measure"
                    window["t0"] = time.monotonic()
                    window["cpu0"] = (os.times(), time.thread_time(), thread_cpu_s(worker_tid()),
                                      node.worker.stats.estimates)
                    return
                if state != "measure":
                    return
                stats["cb"].append(dt)
                stats["total"].append(dt + window["last_take"])
                stats["take"].append(window["last_take"])
                fid = cdr_frame_id(msg) if isinstance(msg, (bytes, bytearray)) else msg.header.frame_id
                seqs[_role].append(int(fid))

            sub.callback = timed

    window = {"state": "wait", "last_take": 0.0}

    def worker_tid() -> int:
        return node.worker._thread.native_id or 0  # noqa: SLF001 - the bench profiles that thread

    class TimedExecutor(SingleThreadedExecutor):
        def _take_subscription(self, sub):
            t0 = time.perf_counter()
            out = super()._take_subscription(sub)
            if id(sub) in image_subs:
                window["last_take"] = time.perf_counter() - t0
            return out

    executor = TimedExecutor()
    executor.add_node(node)
    print("subscriber ready", flush=True)
    hard_stop = time.monotonic() + args.duration + 120
    profiler = None
    if os.environ.get("BENCH_CPROFILE"):  # diagnostics: profile the executor thread
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    while time.monotonic() < hard_stop:
        executor.spin_once(timeout_sec=0.1)
        if window["state"] == "measure" and time.monotonic() - window["t0"] >= args.duration:
            t1 = time.monotonic()
            cpu1 = (os.times(), time.thread_time(), thread_cpu_s(worker_tid()), node.worker.stats.estimates)
            window["state"] = "done"
            break
    else:
        print(json.dumps({"error": "no messages received"}), flush=True)
        node.worker.stop(2.0)
        return
    if profiler is not None:
        import pstats

        profiler.disable()
        st = pstats.Stats(profiler, stream=sys.stderr)
        st.sort_stats("tottime").print_stats(12)
        st.print_callers("rclpy_deserialize|getattr")
    wall = t1 - window["t0"]
    t0s, t1s = window["cpu0"][0], cpu1[0]
    proc_cpu = (t1s.user + t1s.system) - (t0s.user + t0s.system)
    drops = {}
    for r, s in seqs.items():
        if s:
            uniq = sorted(set(s))
            drops[r] = (uniq[-1] - uniq[0] + 1) - len(uniq)
    buf = node.selector.stats()
    result = {
        "variant": variant,
        "cameras": n_cams,
        "transport": transport,
        "messages": len(stats["cb"]),
        "wall_s": wall,
        "rate_hz": len(stats["cb"]) / wall,
        **{f"{k}_{q}": pct(v, q) * 1e3 for k, v in stats.items() for q in (50, 99)},
        **{f"{k}_max": max(v) * 1e3 if v else float("nan") for k, v in stats.items()},
        "cpu_process_pct": 100 * proc_cpu / wall,
        "cpu_executor_pct": 100 * (cpu1[1] - window["cpu0"][1]) / wall,
        "cpu_worker_pct": 100 * (cpu1[2] - window["cpu0"][2]) / wall,
        "estimates": cpu1[3] - window["cpu0"][3],
        "seq_gaps": sum(drops.values()),
        "buffer_dropped_by_overflow": sum(b["dropped_by_overflow"] for b in buf.values()),
        **{f"part_{k}_{q}": pct(v, q) * 1e3 for k, v in parts.items() for q in (50, 99)},
    }
    node.worker.stop(30.0)
    print("RESULT " + json.dumps(result), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()


# ------------------------------------------------------------------------------------------
# orchestrator
# ------------------------------------------------------------------------------------------
def run_one(scenario: str, variant: str, args: argparse.Namespace) -> dict:
    cams, transport, width, height = SCENARIOS[scenario]
    env = bench_env(args.domain)
    sub_cmd = [sys.executable, __file__, "_sub", "--variant", variant, "--cameras", str(cams),
               "--transport", transport, "--duration", str(args.duration), "--period", str(args.period),
               "--max-new-tokens", str(args.max_new_tokens), "--switch-interval", str(args.switch_interval),
               "--qos-depth", str(args.qos_depth)]
    sub_cmd += ["--no-model"] if args.no_model else []
    sub_cmd += ["--server-url", args.server_url] if args.server_url else []
    pub_cmd = [sys.executable, str(ROOT / "bench" / "bench_publisher.py"), "--cameras", str(cams),
               "--transport", transport, "--width", str(width), "--height", str(height), "--rate", str(args.rate),
               "--duration", str(args.duration + 6)]
    sub = subprocess.Popen(sub_cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    pub = subprocess.Popen(pub_cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    result: dict = {}
    lines = []
    try:
        for line in sub.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if line.startswith("RESULT "):
                result = json.loads(line[7:])
        sub.wait(timeout=60)
    finally:
        if pub.poll() is None:
            pub.terminate()
        pub_out = pub.communicate(timeout=30)[0]
        if sub.poll() is None:
            sub.kill()
    for line in pub_out.splitlines():
        if line.startswith("published"):
            result["published"] = line
    if not result or "variant" not in result:
        sys.stderr.write("".join(lines[-30:]) + pub_out)
        result = {"variant": variant, "error": "no result"}
    result["scenario"] = scenario
    return result


COLUMNS = [
    ("scenario", "{}"), ("variant", "{}"), ("rate_hz", "{:.1f}"), ("take_50", "{:.3f}"), ("take_99", "{:.3f}"),
    ("cb_50", "{:.3f}"), ("cb_99", "{:.3f}"), ("cb_max", "{:.2f}"), ("total_50", "{:.3f}"), ("total_99", "{:.3f}"),
    ("cpu_process_pct", "{:.0f}"), ("cpu_executor_pct", "{:.1f}"), ("cpu_worker_pct", "{:.0f}"),
    ("estimates", "{}"), ("seq_gaps", "{}"), ("buffer_dropped_by_overflow", "{}"),
]


def print_table(rows: list[dict]) -> None:
    heads = ["scenario", "variant", "msg/s", "take p50", "take p99", "cb p50", "cb p99", "cb max",
             "take+cb p50", "take+cb p99", "CPU proc %", "CPU exec %", "CPU infer %", "estimates",
             "drops (seq gaps)", "buf overflow"]
    print("| " + " | ".join(heads) + " |")
    print("|" + "---|" * len(heads))
    for r in rows:
        if "error" in r:
            print(f"| {r.get('scenario')} | {r['variant']} | error: {r['error']} |")
            continue
        print("| " + " | ".join(fmt.format(r[k]) for k, fmt in COLUMNS) + " |")
    print("\n(times in ms; CPU in % of one core; 2-core machine)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", nargs="?", default="run", choices=("run", "_sub"))
    ap.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    ap.add_argument("--variants", nargs="+", default=["node", "naive", "raw"], choices=VARIANTS)
    ap.add_argument("--duration", type=float, default=20.0, help="measurement window per run, seconds")
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument("--period", type=float, default=0.0, help="node 'period' (0 = model back to back)")
    ap.add_argument("--max-new-tokens", type=int, default=0, help="node model.max_new_tokens (0 = protocol's 200)")
    ap.add_argument("--no-model", action="store_true", help="stop the inference thread (ingest cost alone)")
    ap.add_argument("--switch-interval", type=float, default=0.0,
                    help="sys.setswitchinterval in the node process (0 = Python's default 0.005 s)")
    ap.add_argument("--qos-depth", type=int, default=5, help="node image_qos.depth (subscription history)")
    ap.add_argument("--domain", type=int, default=int(os.environ.get("BENCH_ROS_DOMAIN_ID", "153")))
    ap.add_argument("--json", default="", help="also write all rows to this file")
    ap.add_argument("--server-url", default="",
                    help="run the node with model.backend server against this URL (a transformers serve)")
    ap.add_argument("--smoke", action="store_true",
                    help="seconds-long check that the bench runs (CI): 3 s, one scenario, the node variant")
    # subscriber-only
    ap.add_argument("--variant", choices=VARIANTS, default="node")
    ap.add_argument("--cameras", type=int, default=1)
    ap.add_argument("--transport", default="raw")
    args = ap.parse_args(argv)
    if args.mode == "_sub":
        run_subscriber(args)
        return 0
    if args.smoke:
        args.duration, args.scenarios, args.variants = 3.0, ["1x640x480raw"], ["node"]
    rows = []
    for scenario in args.scenarios:
        for variant in args.variants:
            row = run_one(scenario, variant, args)
            rows.append(row)
            print(f"# {scenario} {variant}: {json.dumps(row)}", file=sys.stderr, flush=True)
    print(f"duration {args.duration}s per run, rate {args.rate} Hz, node period {args.period}, "
          f"model {'off' if args.no_model else 'on (back to back)'}"
          f"{f' in a server process ({args.server_url})' if args.server_url else ' in-process'}, "
          f"GIL switch interval {args.switch_interval or 0.005}s, image_qos.depth {args.qos_depth}\n")
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
