#!/usr/bin/env python3
"""Server backend bench: throughput and latency against a real ``transformers serve``, the
client's own cost per estimate, lossless PNG settings, and the node's start-up in server mode.

Parts (all by default; ``--parts`` picks some):

* ``throughput``: estimates per second and latency p50/p99 with 1, 2, 4, 8 requests in flight
  (independent episodes through ``ProgressScorer``, one thread each) against ``transformers serve``
  of ``--model`` (default: the shipped model) on CPU, started by the bench on 127.0.0.1 unless
  ``--url`` names a running server.
* ``client``: the node's own cost per estimate in server mode (composite, PNG encoding, request
  building, JSON), p50/p99, without the server's time.
* ``png``: encode time and size of the two-view and three-view composite at zlib levels 0-9
  (every level is lossless; checked).
* ``startup``: a reward node process started in-process mode and in server mode: seconds until
  "ready" and its resident memory then (whether torch / transformers were imported).

    .venv/bin/python bench/server_bench.py                      # everything (~5 min on 2 cores)
    .venv/bin/python bench/server_bench.py --parts throughput --concurrency 1 8 --steps 24
    .venv/bin/python bench/server_bench.py --smoke              # seconds-long check that it runs (CI)

Prints tables; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
VENV_BIN = Path(sys.executable).parent


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values), q))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(model: str, threads: int) -> tuple[subprocess.Popen[bytes], str]:
    """``transformers serve`` on 127.0.0.1; waits for /health (at most 120 s)."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen([str(VENV_BIN / "transformers"), "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--device", "cpu", model], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                if json.loads(reply.read()).get("status") == "ok":
                    return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("transformers serve did not come up within 120 s")


_EPISODE: list[dict[str, np.ndarray]] = []


def views(rng: np.random.Generator, roles: tuple[str, ...], k: int) -> dict[str, np.ndarray]:
    """Frame ``k`` of a synthetic tabletop episode (rendered scene and wrist views, 640x480), with
    mild sensor noise; a third camera reuses the scene view mirrored."""
    if not _EPISODE:
        from sole_r1_tools.synth.episodes import generate_episode

        episode = generate_episode("push", "success", seed=7, n_frames=48, fps=15.0)
        _EPISODE.extend(episode.frames)
    base = _EPISODE[k % len(_EPISODE)]
    sources = [base["external"], base["wrist"], base["external"][:, ::-1]]
    out = {}
    for i, role in enumerate(roles):
        img = np.asarray(sources[i % 3], dtype=np.int16)
        out[role] = np.clip(img + rng.integers(-2, 3, img.shape), 0, 255).astype(np.uint8)
    return out


def part_throughput(url: str, concurrency: list[int], steps: int, max_new_tokens: int) -> None:
    from sole_r1_ros.core.scorer import build_scorer
    from sole_r1_ros.settings.groups import DecodingSettings, ModelSettings

    scorer = build_scorer(ModelSettings(backend="server", url=url, max_concurrency=max(concurrency), timeout_s=600),
                          DecodingSettings(greedy=True, max_new_tokens=max_new_tokens))
    roles = ("external", "wrist")
    print(f"\n## throughput: transformers serve ({scorer.model.describe()['url']}), greedy, "
          f"{max_new_tokens or 200} new tokens at most, {steps} scored steps per episode\n")
    print("| in flight | estimates/s | latency p50 (s) | latency p99 (s) | new tokens/estimate | errors |")
    print("|---|---|---|---|---|---|")
    for n in concurrency:
        latencies, tokens, errors, wall = run_episodes(scorer, roles, n, steps)
        print(f"| {n} | {len(latencies) / wall:.2f} | {pct(latencies, 50):.3f} | {pct(latencies, 99):.3f} | "
              f"{statistics.mean(tokens) if tokens else 0:.0f} | {errors} |", flush=True)
    scorer.model.close()


def run_episodes(scorer: object, roles: tuple[str, ...], n: int, steps: int) -> tuple[list[float], list[int], int,
                                                                                    float]:
    """``n`` episodes in parallel threads, ``steps`` scored steps each: latencies, tokens, errors, wall."""
    latencies: list[float] = []
    tokens: list[int] = []
    errors = [0]
    lock = threading.Lock()

    def episode(seed: int) -> None:
        rng = np.random.default_rng(seed)
        ep = scorer.new_episode("push the red block into the green zone", roles)  # type: ignore[attr-defined]
        scorer.score(ep, 0, views(rng, roles, 0))  # type: ignore[attr-defined]
        for k in range(1, steps + 1):
            t0 = time.perf_counter()
            e = scorer.score(ep, k, views(rng, roles, k))  # type: ignore[attr-defined]
            with lock:
                latencies.append(time.perf_counter() - t0)
                tokens.append(e.new_tokens)
                errors[0] += e.status.value == "error"

    threads = [threading.Thread(target=episode, args=(i,)) for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, tokens, errors[0], time.perf_counter() - t0


class _Echo:
    """A loopback HTTP server answering every chat request at once with a fixed reply: the
    client's cost without the model's."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        reply = json.dumps({"model": "echo", "choices": [{"message": {
            "content": "<answer>40%</answer>", "reasoning_content": "the block moved"}}],
            "usage": {"prompt_tokens": 1200, "completion_tokens": 60}}).encode()
        models = json.dumps({"data": [{"id": "echo", "owned_by": "vllm"}]}).encode()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _send(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._send(models)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                self._send(reply)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


def _timed_generate(real: object, last: dict[str, float]) -> object:
    """``generate`` that keeps the backend's timing extras of the last call in ``last``."""
    from sole_r1_ros.backends.contract import BatchTimings

    def timed(conversations, images, settings, timings=None):  # type: ignore[no-untyped-def]
        timings = timings if timings is not None else BatchTimings()
        out = real(conversations, images, settings, timings)  # type: ignore[operator]
        last.update(timings.extra)
        return out

    return timed


def part_client(steps: int, cameras: list[int]) -> None:
    from sole_r1_ros.core.scorer import build_scorer
    from sole_r1_ros.settings.groups import DecodingSettings, ModelSettings

    echo = _Echo()
    scorer = build_scorer(ModelSettings(backend="server", url=echo.url), DecodingSettings(greedy=True))
    print("\n## client: the node's own cost per estimate in server mode (loopback server answering at once)\n")
    print("| cameras | composite p50 | composite p99 | PNG + request p50 | PNG + request p99 | HTTP + JSON p50 | "
          "HTTP + JSON p99 | total p50 | total p99 | PNG size (kB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in cameras:
        roles = tuple(f"cam{i}" for i in range(n))
        rng = np.random.default_rng(0)
        ep = scorer.new_episode("push the red block", roles)
        scorer.score(ep, 0, views(rng, roles, 0))
        comp, enc, http, total = [], [], [], []
        real_generate = scorer.model.generate
        last: dict[str, float] = {}
        scorer.model.generate = _timed_generate(real_generate, last)  # type: ignore[method-assign]
        for k in range(1, steps + 1):
            frame = views(rng, roles, k)
            t0 = time.perf_counter()
            e = scorer.score(ep, k, frame)
            total.append(time.perf_counter() - t0)
            enc.append(last["encode_s"])
            http.append(last["http_s"])
            comp.append(e.timings["preprocess_s"] - last["encode_s"])
        scorer.model.generate = real_generate  # type: ignore[method-assign]
        from sole_r1_ros.backends.openai_protocol import png_data_url
        from sole_r1_ros.core.composite import compose

        size = len(png_data_url(compose(frame, frame, frame, roles))) * 3 / 4 / 1024
        ms = lambda v, q: f"{pct(v, q) * 1e3:.1f}"  # noqa: E731
        print(f"| {n} | {ms(comp, 50)} | {ms(comp, 99)} | {ms(enc, 50)} | {ms(enc, 99)} | {ms(http, 50)} | "
              f"{ms(http, 99)} | {ms(total, 50)} | {ms(total, 99)} | {size:.0f} |", flush=True)
    print("\n(ms; composite = letterbox + grid + bicubic resize, as in-process)")


def part_png(repeats: int) -> None:
    import cv2
    from PIL import Image

    from sole_r1_ros.backends.openai_protocol import png_bytes
    from sole_r1_ros.core.composite import compose

    print("\n## png: lossless encoding of the composite (synthetic episode frames + noise)\n")
    print("| cameras | encoder | encode p50 (ms) | size (kB) | lossless |")
    print("|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    strategies = {"default": cv2.IMWRITE_PNG_STRATEGY_DEFAULT, "huffman": cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY,
                  "rle": cv2.IMWRITE_PNG_STRATEGY_RLE}
    for n in (2, 3):
        roles = tuple(f"cam{i}" for i in range(n))
        frames = [views(rng, roles, k) for k in range(3)]
        image = compose(frames[0], frames[1], frames[2], roles)
        pixels = np.asarray(image)
        encoders: list[tuple[str, object]] = []
        for level in (0, 1, 3, 6, 9):
            encoders.append((f"PIL level {level}", lambda lv=level, im=image: _pil_png(im, lv)))
        for level in (0, 1, 3, 6):
            for name, strategy in strategies.items():
                encoders.append((f"OpenCV level {level} {name}",
                                 lambda lv=level, st=strategy, im=image: png_bytes(im, compress_level=lv, strategy=st)))
        times: dict[str, list[float]] = {label: [] for label, _ in encoders}
        data: dict[str, bytes] = {}
        for _ in range(repeats):  # round robin: a load change on the shared machine hits every encoder alike
            for label, encode in encoders:
                t0 = time.perf_counter()
                data[label] = encode()  # type: ignore[operator]
                times[label].append(time.perf_counter() - t0)
        for label, _ in encoders:
            same = np.array_equal(np.asarray(Image.open(io.BytesIO(data[label])).convert("RGB")), pixels)
            print(f"| {n} | {label} | {pct(times[label], 50) * 1e3:.1f} | {len(data[label]) / 1024:.0f} | {same} |",
                  flush=True)


def _pil_png(image: object, level: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=level)  # type: ignore[attr-defined]
    return buffer.getvalue()


def part_startup(url: str, runs: int) -> None:
    print("\n## startup: reward node process until 'ready', and its RSS then\n")
    print("| mode | ready after (s) p50 | RSS (MiB) | torch imported | transformers imported |")
    print("|---|---|---|---|---|")
    probe = ("import sys, resource, time, rclpy; from sole_r1_ros.ros.reward_node import RewardNode; "
             "from rclpy.parameter import Parameter; t0 = time.perf_counter(); rclpy.init(); "
             "node = RewardNode(parameter_overrides=[Parameter(k, value=v) for k, v in __import__('json')"
             ".loads(sys.argv[1]).items()]); dt = time.perf_counter() - T0; "
             "rss = int(open('/proc/self/statm').read().split()[1]) * resource.getpagesize() / 2**20; "
             "print('RESULT', dt, rss, 'torch' in sys.modules, 'transformers' in sys.modules); "
             "node.shutdown(); node.destroy_node(); rclpy.try_shutdown()")
    for mode, params in (("in-process (shipped model, CPU)", {"model.device": "cpu"}),
                         ("server", {"model.backend": "server", "model.url": url})):
        results = []
        for _ in range(runs):
            env = {**os.environ, "ROS_DOMAIN_ID": "74", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
                   "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
            code = "import time; T0 = time.perf_counter(); " + probe  # from interpreter start, imports included
            done = subprocess.run([sys.executable, "-c", code, json.dumps(params)], capture_output=True, text=True,
                                  env=env, cwd=ROOT, timeout=300)
            line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT")), None)
            if line is None:
                print(f"| {mode} | failed: {done.stderr[-300:]!r} | | | |")
                break
            _, dt, rss, torch, tf = line.split()
            results.append((float(dt), float(rss), torch, tf))
        if results:
            print(f"| {mode} | {statistics.median(r[0] for r in results):.2f} | "
                  f"{statistics.median(r[1] for r in results):.0f} | {results[0][2]} | {results[0][3]} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=["throughput", "client", "png", "startup"],
                    choices=("throughput", "client", "png", "startup"))
    ap.add_argument("--url", default="", help="a running OpenAI-compatible server (default: start transformers serve)")
    ap.add_argument("--model", default=str(ROOT / "sole_r1_ros" / "data" / "default_model"))
    ap.add_argument("--server-threads", type=int, default=1, help="OMP threads of the started server")
    ap.add_argument("--concurrency", nargs="+", type=int, default=[1, 2, 4, 8])
    ap.add_argument("--steps", type=int, default=8, help="scored steps per episode (throughput, client x4)")
    ap.add_argument("--max-new-tokens", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=10, help="png: encodings per level")
    ap.add_argument("--startup-runs", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="seconds-long check that every part runs (CI)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.concurrency, args.steps, args.repeats, args.startup_runs = [1, 2], 1, 1, 1
        args.max_new_tokens = args.max_new_tokens or 16
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    server = None
    url = args.url
    try:
        if not url and {"throughput", "startup"} & set(args.parts):
            server, url = start_server(args.model, args.server_threads)
        if "throughput" in args.parts:
            part_throughput(url, args.concurrency, args.steps, args.max_new_tokens)
        if "client" in args.parts:
            part_client(args.steps * 4, [2, 3])
        if "png" in args.parts:
            part_png(args.repeats)
        if "startup" in args.parts:
            part_startup(url, args.startup_runs)
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
