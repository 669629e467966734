"""Helpers for the integration tests that run real ROS 2 processes over real DDS.

- :func:`allocate_domain_id`: a ROS domain id no other run of these tests on this machine holds
  (a lock file per id), so parallel runs never cross-talk; :func:`ros_env` is the environment
  for every child process (same domain, localhost-only discovery, offline Hugging Face, one
  OpenMP thread so CPU timings stay sane on a shared 2-core box).
- :class:`ManagedProcess`: a child process with its stdout+stderr in a log file, polled for
  lines, always stopped (SIGINT, then SIGKILL after a grace period).
- :class:`RosListener`: one rclpy context + node + executor spun in a background thread of the
  pytest process; records messages with a global arrival sequence number, publishes, calls
  services.
- :func:`reward_node_command` / :func:`camera_publisher_command`: command lines built the way
  ``launch/reward_node.launch.py`` would start the node (same executable, params file, remaps).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config"
VENV_BIN = Path(sys.executable).parent
REWARD_NODE = VENV_BIN / "reward_node"
CAMERA_PUBLISHER = REPO / "test" / "camera_publisher.py"
NODE_NAME = "sole_r1_reward"

DOMAIN_RANGE = range(100, 230)  # < 233: the highest id the default RTPS port mapping allows
T = TypeVar("T")


# --- environment ------------------------------------------------------------------------------
_domain_lock_fd: int | None = None


def allocate_domain_id() -> int:
    """A domain id in ``DOMAIN_RANGE`` held (flock) by this process until it exits."""
    global _domain_lock_fd
    start = os.getpid() % len(DOMAIN_RANGE)
    for k in range(len(DOMAIN_RANGE)):
        domain = DOMAIN_RANGE[(start + k) % len(DOMAIN_RANGE)]
        fd = os.open(f"/tmp/sole_r1_ros_test_domain_{domain}.lock", os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        if _domain_lock_fd is not None:
            os.close(_domain_lock_fd)  # releases the previous id
        _domain_lock_fd = fd
        return domain
    raise RuntimeError(f"every ROS domain id in {DOMAIN_RANGE} is held by another test run")


def ros_env(domain_id: int, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for child processes: isolated domain, localhost discovery, offline HF."""
    env = dict(os.environ)
    for key in ("ROS_STATIC_PEERS", "ROS_DISCOVERY_SERVER", "FASTRTPS_DEFAULT_PROFILES_FILE"):
        env.pop(key, None)
    env.update({
        "ROS_DOMAIN_ID": str(domain_id),
        "ROS_LOCALHOST_ONLY": "1",
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "RCUTILS_COLORIZED_OUTPUT": "0",
        "RCUTILS_LOGGING_BUFFERED_STREAM": "0",
    })
    env.update(extra or {})
    return env


def set_process_ros_env(domain_id: int) -> dict[str, str | None]:
    """Put the domain settings into ``os.environ`` (before ``rclpy.init``); returns the old values."""
    values = {"ROS_DOMAIN_ID": str(domain_id), "ROS_LOCALHOST_ONLY": "1", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    old = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    return old


def restore_env(old: Mapping[str, str | None]) -> None:
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def wait_until(predicate: Callable[[], T], timeout: float, message: str | Callable[[], str] = "condition",
               interval: float = 0.02) -> T:
    """Poll ``predicate`` until it returns something truthy (returned) or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {text}")
        time.sleep(interval)


# --- processes --------------------------------------------------------------------------------
class ManagedProcess:
    """A child process whose stdout and stderr go to ``log_path``."""

    def __init__(self, name: str, argv: Sequence[str], *, env: Mapping[str, str], log_path: Path,
                 cwd: Path = REPO) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT, env=dict(env),
                                     cwd=str(cwd), start_new_session=True)
        self.stopped_by_us = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def running(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 60) -> str:
        text = "\n".join(self.output().splitlines()[-lines:])
        return f"--- {self.name} (pid {self.pid}, rc {self.returncode}) log {self.log_path} ---\n{text}"

    def wait_for_output(self, pattern: str, timeout: float, *, start: int = 0) -> re.Match[str]:
        """Wait until ``pattern`` (regex) appears in the log after character ``start``."""
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.output(), start)
            if match:
                return match
            if not self.running():
                match = regex.search(self.output(), start)
                if match:
                    return match
                raise AssertionError(f"{self.name} exited (rc {self.returncode}) before printing "
                                     f"/{pattern}/\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no /{pattern}/ within {timeout:.0f} s\n{self.tail()}")
            time.sleep(0.05)

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def send_sigint(self) -> None:
        if self.running():
            self.stopped_by_us = True
            self.proc.send_signal(signal.SIGINT)

    def stop(self, grace: float = 5.0) -> int:
        """SIGINT, then SIGKILL after ``grace`` s; returns the exit code. Idempotent."""
        if self.running():
            self.send_sigint()
            if self.wait_exit(grace) is None:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


def stop_all(processes: Iterable[ManagedProcess], grace: float = 5.0) -> None:
    """Stop several processes concurrently: SIGINT to all, one shared grace period, then kill."""
    procs = [p for p in processes if p is not None]
    for p in procs:
        p.send_sigint()
    deadline = time.monotonic() + grace
    for p in procs:
        p.wait_exit(max(0.0, deadline - time.monotonic()))
    for p in procs:
        p.stop(grace=0.0)


def reward_node_command(
    *,
    params_file: Path = CONFIG / "reward_node.yaml",
    namespace: str = "",
    remaps: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
    overrides: Sequence[Path] = (),
) -> list[str]:
    """``reward_node --ros-args ...`` as ``launch/reward_node.launch.py`` builds it: the params
    file, then each of ``overrides`` (launch's ``overrides:=``; a later file wins), then ``-p``."""
    argv = [str(REWARD_NODE), "--ros-args", "-r", f"__node:={NODE_NAME}"]
    if namespace:
        argv += ["-r", f"__ns:={namespace}"]
    argv += ["--params-file", str(params_file)]
    for extra_file in overrides:
        argv += ["--params-file", str(extra_file)]
    for key, value in (params or {}).items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        argv += ["-p", f"{key}:={value}"]
    for src, dst in (remaps or {}).items():
        argv += ["-r", f"{src}:={dst}"]
    return argv


def camera_publisher_command(
    *,
    topics: Sequence[str],
    roles: Sequence[str] = ("external", "wrist"),
    rate: float = 15.0,
    transport: str = "raw",
    count: int = 0,
    stamp_log: Path | None = None,
    offsets_ms: Sequence[float] | None = None,
    clock: bool = False,
    sim_start: float = 1000.0,
    depth: int = 10,
    wait_subscribers: int = 1,
    extra: Sequence[str] = (),
    transports: Sequence[str] | None = None,
) -> list[str]:
    argv = [sys.executable, str(CAMERA_PUBLISHER), "--roles", *roles, "--topics", *topics,
            "--rate", str(rate), "--transport", transport, "--count", str(count), "--depth", str(depth),
            "--wait-subscribers", str(wait_subscribers)]
    if transports is not None:
        argv += ["--transports", *transports]
    if stamp_log is not None:
        argv += ["--stamp-log", str(stamp_log)]
    if offsets_ms is not None:
        argv += ["--offsets-ms", *(str(o) for o in offsets_ms)]
    if clock:
        argv += ["--clock", "--sim-start", str(sim_start)]
    return argv + list(extra)


def read_stamp_log(path: Path) -> dict[str, list[int]]:
    """``role -> [stamp_ns, ...]`` in publish order from a camera publisher's ``--stamp-log``."""
    out: dict[str, list[int]] = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:  # a line being written may be incomplete
            out.setdefault(parts[0], []).append(int(parts[1]))
    return out


# --- the in-test ROS participant ---------------------------------------------------------------
@dataclass(frozen=True)
class Received:
    seq: int  # arrival order across every recorder of the listener
    t: float  # time.monotonic() at the callback
    msg: Any


class Recorder:
    """Messages of one subscription, in arrival order."""

    def __init__(self, listener: RosListener, topic: str) -> None:
        self.listener = listener
        self.topic = topic
        self.items: list[Received] = []
        self.subscription: Any = None

    def _on_msg(self, msg: Any) -> None:
        with self.listener.cond:
            self.items.append(Received(next(self.listener._seq), time.monotonic(), msg))
            self.listener.cond.notify_all()

    def snapshot(self) -> list[Received]:
        with self.listener.cond:
            return list(self.items)

    def __len__(self) -> int:
        with self.listener.cond:
            return len(self.items)

    def matched(self) -> int:
        return self.subscription.get_publisher_count()


class RosListener:
    """An rclpy context of its own, one node, a single-threaded executor in a daemon thread."""

    def __init__(self, domain_id: int, name: str = "reward_node_test_listener") -> None:
        import itertools

        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        self.domain_id = domain_id
        self.context = Context()
        # no signal handlers: Ctrl-C must still interrupt pytest normally
        rclpy.init(context=self.context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.cond = threading.Condition()
        self._seq = itertools.count()
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._spin, name="ros_listener", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception as err:  # noqa: BLE001 - reported by close()
                if self._stop.is_set():
                    return
                self._errors.append(err)
                time.sleep(0.05)

    def subscribe(self, topic: str, msg_type: Any, qos: Any = 10) -> Recorder:
        recorder = Recorder(self, topic)
        recorder.subscription = self.node.create_subscription(msg_type, topic, recorder._on_msg, qos)
        return recorder

    def publisher(self, topic: str, msg_type: Any, qos: Any = 10) -> Any:
        return self.node.create_publisher(msg_type, topic, qos)

    def count_publishers(self, topic: str) -> int:
        return self.node.count_publishers(topic)

    def call(self, srv_type: Any, service: str, request: Any, timeout: float) -> tuple[Any, float]:
        """Call a service; returns (response, seconds from call_async to the response)."""
        client = self.node.create_client(srv_type, service)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise AssertionError(f"service {service} not available within {timeout} s")
            done = threading.Event()
            t_done: list[float] = []

            def on_done(_future: Any) -> None:
                t_done.append(time.monotonic())
                done.set()

            t0 = time.monotonic()
            future = client.call_async(request)
            future.add_done_callback(on_done)
            if not done.wait(timeout):
                future.cancel()
                raise AssertionError(f"service {service} gave no response within {timeout} s")
            return future.result(), t_done[0] - t0
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        import rclpy

        self._stop.set()
        self._thread.join(5)
        self.executor.shutdown(timeout_sec=1)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        if self._errors:
            raise RuntimeError(f"the listener executor raised: {self._errors[0]!r}") from self._errors[0]


@contextlib.contextmanager
def isolated_ros(name: str) -> Iterator[tuple[RosListener, dict[str, str]]]:
    """A domain id of its own, a listener node on it, and the environment for child processes;
    everything is released on exit."""
    domain = allocate_domain_id()
    old_env = set_process_ros_env(domain)
    listener = RosListener(domain, name=name)
    try:
        yield listener, ros_env(domain)
    finally:
        try:
            listener.close()
        finally:
            restore_env(old_env)


# --- the reward node as seen from the test ------------------------------------------------------
class RewardNodeUnderTest:
    """A reward node process plus the listener's recorders of its outputs."""

    OUTPUTS = ("progress", "reward", "reasoning", "estimate")  # the node publishes in this order

    def __init__(self, key: str, listener: RosListener, process: ManagedProcess, namespace: str,
                 diagnostics: Recorder) -> None:
        from std_msgs.msg import Float32, String

        self.key = key
        self.listener = listener
        self.process = process
        self.namespace = namespace.rstrip("/")
        self.fqn = f"{self.namespace}/{NODE_NAME}"
        self.diagnostics = diagnostics
        types = {"progress": Float32, "reward": Float32, "reasoning": String, "estimate": String}
        # created in publish order, so one executor wake-up handles them in that order too
        self.rec = {name: listener.subscribe(self.topic(name), types[name], 50) for name in self.OUTPUTS}

    def topic(self, name: str) -> str:
        """``~/<name>`` of this node, or a relative name in its namespace."""
        if name in self.OUTPUTS or name in ("reset", "request"):
            return f"{self.fqn}/{name}"
        return f"{self.namespace}/{name}"

    # readiness
    def wait_ready(self, timeout: float = 120.0) -> None:
        self.process.wait_for_output(r"\bready: mode=", timeout)
        wait_until(lambda: all(r.matched() >= 1 for r in self.rec.values()), 30,
                   lambda: f"{self.key}: the listener matching the node's outputs\n{self.process.tail()}")

    # estimates
    def estimates(self) -> list[dict[str, Any]]:
        return [json.loads(r.msg.data) for r in self.rec["estimate"].snapshot()]

    def wait_estimates(self, predicate: Callable[[list[dict[str, Any]]], T], timeout: float,
                       what: str = "estimates") -> T:
        def check() -> T:
            return predicate(self.estimates())

        return wait_until(check, timeout, lambda: f"{self.key}: {what}; got {self._summary()}\n{self.process.tail()}")

    def _summary(self) -> str:
        est = self.estimates()[-12:]
        return "; ".join(f"[{e['status']} ep={e['episode_id']} step={e['step']} id={e['request_id']!r}]" for e in est)

    # diagnostics
    def diagnostics_of(self, item: Received) -> dict[str, dict[str, Any]] | None:
        """``suffix -> {"level", "message", "values", "stamp_ns", "t"}`` for this node's statuses."""
        prefix = f"{self.fqn}: "
        out: dict[str, dict[str, Any]] = {}
        stamp = item.msg.header.stamp
        for status in item.msg.status:
            if status.name.startswith(prefix):
                out[status.name[len(prefix):]] = {
                    "level": status.level, "message": status.message,
                    "values": {kv.key: kv.value for kv in status.values},
                    "stamp_ns": stamp.sec * 1_000_000_000 + stamp.nanosec, "t": item.t,
                }
        return out or None

    def diagnostics_history(self) -> list[dict[str, dict[str, Any]]]:
        return [d for d in (self.diagnostics_of(i) for i in self.diagnostics.snapshot()) if d]

    def latest_diagnostics(self, after: float = 0.0) -> dict[str, dict[str, Any]] | None:
        history = [d for d in self.diagnostics_history() if d["inference"]["t"] > after]
        return history[-1] if history else None

    def wait_diagnostics(self, predicate: Callable[[dict[str, dict[str, Any]]], bool], timeout: float,
                         what: str, after: float = 0.0) -> dict[str, dict[str, Any]]:
        def check() -> dict[str, dict[str, Any]] | None:
            for d in reversed(self.diagnostics_history()):
                if d["inference"]["t"] > after and predicate(d):
                    return d
            return None

        return wait_until(check, timeout, lambda: f"{self.key}: diagnostics {what}; latest "
                          f"{self.latest_diagnostics()}\n{self.process.tail()}")
