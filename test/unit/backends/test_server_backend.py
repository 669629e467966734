"""The server backend against real HTTP servers on 127.0.0.1 that answer from a script: start-up
(dialect, model name, server down), retries with backoff, error mapping, timeouts, cancel, TLS,
a server killed and restarted, and an API key that never leaks."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scripted_server import Reply, ScriptedServer, completion
from sole_r1_ros.backends.http_client import (
    CONNECT_TIMEOUT_S,
    HttpError,
    JsonHttpClient,
    RetryPolicy,
    parse_retry_after,
)
from sole_r1_ros.backends.openai_server import OpenAIServerBackend, api_base_url
from sole_r1_ros.backends.registry import load_backend
from sole_r1_ros.core.protocol import load_protocol
from sole_r1_ros.core.scorer import ProgressScorer
from sole_r1_ros.core.status import EstimateStatus
from sole_r1_ros.errors import ConfigError, InferenceError, ModelLoadError
from sole_r1_ros.pipeline.result import RewardResult
from sole_r1_ros.settings.generation import GenerationSettings
from sole_r1_ros.settings.groups import ModelSettings

ROLES = ("external", "wrist")
FAST = {"retry_backoff_s": 0.01, "retry_backoff_max_s": 0.02, "startup_wait_s": 0.0, "timeout_s": 10.0}
SECRET = "sk-test-0123456789-very-secret"


def settings(url: str, **kw: object) -> ModelSettings:
    return ModelSettings(backend="server", url=url, **{**FAST, **kw})  # type: ignore[arg-type]


def conversation() -> list[dict]:
    return load_protocol().templates.messages("push the block", 0, n_views=2)


def image() -> Image.Image:
    return Image.fromarray(np.zeros((56, 84, 3), dtype=np.uint8))


def ask(backend: OpenAIServerBackend, settings_: GenerationSettings | None = None) -> str:
    return backend.generate([conversation()], [image()], settings_ or GenerationSettings.greedy(20))[0].text


@pytest.fixture()
def server() -> ScriptedServer:
    with ScriptedServer() as srv:
        yield srv


# --- start-up -----------------------------------------------------------------------------------
def test_loads_by_name_detects_vllm_and_sends_the_protocol(server: ScriptedServer) -> None:
    backend = load_backend(settings(server.url))
    assert isinstance(backend, OpenAIServerBackend)
    assert (backend.dialect, backend.model_name) == ("vllm", "served-model")
    reply = backend.generate([conversation()], [image()], GenerationSettings(seed=3, max_new_tokens=20))[0]
    assert (reply.text, reply.prompt_tokens, reply.new_tokens) == ("<think>ok</think><answer>42%</answer>", 300, 12)
    body = server.posts()[0].body
    assert body["model"] == "served-model" and body["top_k"] == 50 and body["seed"] == 3
    assert body["messages"][1]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert server.posts()[0].path == "/v1/chat/completions"
    assert backend.describe()["requests"] == 1


@pytest.mark.parametrize(("models", "health", "dialect", "name"), [
    ({"data": [{"id": "m", "owned_by": "sglang"}]}, None, "sglang", "m"),
    ("error", {"status": "ok"}, "transformers", None),  # transformers serve: /v1/models gives 500
])
def test_dialect_detection(models: object, health: object, dialect: str, name: str | None) -> None:
    with ScriptedServer(models=models, health=health) as srv:
        backend = OpenAIServerBackend(settings(srv.url))
        assert (backend.dialect, backend.model_name) == (dialect, name)
        ask(backend)
        body = srv.posts()[0].body
        assert ("model" in body) == (name is not None)


def test_an_unknown_server_needs_the_dialect_set() -> None:
    with ScriptedServer(models={"data": [{"id": "m", "owned_by": "someone"}]}) as srv:
        with pytest.raises(ModelLoadError, match="set model.dialect"):
            OpenAIServerBackend(settings(srv.url))
        assert OpenAIServerBackend(settings(srv.url, dialect="vllm")).dialect == "vllm"


def test_model_names_are_checked_against_what_the_server_lists() -> None:
    models = {"data": [{"id": "a", "owned_by": "vllm"}, {"id": "b", "owned_by": "vllm"}]}
    with ScriptedServer(models=models) as srv:
        with pytest.raises(ModelLoadError, match=r"several models \['a', 'b'\].*model.name"):
            OpenAIServerBackend(settings(srv.url))
        with pytest.raises(ModelLoadError, match="does not serve model.name 'c'"):
            OpenAIServerBackend(settings(srv.url, name="c"))
        assert OpenAIServerBackend(settings(srv.url, name="b")).model_name == "b"


def test_server_down_at_start_refuses_to_start_with_the_reason() -> None:
    with ScriptedServer() as srv:
        url = srv.url
    with pytest.raises(ModelLoadError, match=r"unreachable after 0\.2 s.*cannot connect"):
        OpenAIServerBackend(settings(url, startup_wait_s=0.2))


def test_a_server_that_comes_up_within_the_startup_wait_is_used() -> None:
    with ScriptedServer() as first:
        port = first.port
    started: list[ScriptedServer] = []
    timer = threading.Timer(0.5, lambda: started.append(ScriptedServer(port=port)))
    timer.start()
    try:
        backend = OpenAIServerBackend(settings(f"http://127.0.0.1:{port}", startup_wait_s=20.0))
        assert backend.model_name == "served-model"
    finally:
        timer.join()
        for s in started:
            s.stop()


@pytest.mark.parametrize("status", [503, 502, 429])
def test_a_server_answering_5xx_or_429_at_start_is_waited_for(status: int) -> None:
    """A proxy in front of a vLLM that is still loading answers 503 (or 502, 429): start-up waits
    for it as for a server that does not accept connections yet."""
    with ScriptedServer(models=Reply(status, {"detail": "model is loading"})) as srv:
        ready = {"data": [{"id": "served-model", "object": "model", "owned_by": "vllm"}]}
        timer = threading.Timer(0.5, lambda: setattr(srv, "models", ready))
        timer.start()
        try:
            backend = OpenAIServerBackend(settings(srv.url, startup_wait_s=20.0))
        finally:
            timer.join()
        assert (backend.dialect, backend.model_name) == ("vllm", "served-model")
        assert sum(s.path == "/v1/models" for s in srv.seen) >= 2


def test_a_server_still_not_ready_at_the_deadline_fails_with_its_last_status() -> None:
    with ScriptedServer(models=Reply(503, {"detail": "model is loading"})) as srv:
        t0 = time.monotonic()
        with pytest.raises(ModelLoadError, match=r"not ready after 0\.3 s \(model\.startup_wait\).*HTTP 503: "
                                                 r"model is loading"):
            OpenAIServerBackend(settings(srv.url, startup_wait_s=0.3))
        assert time.monotonic() - t0 >= 0.3


def test_transformers_serve_answering_500_on_models_is_not_waited_for() -> None:
    """transformers serve answers /v1/models with 500 for good (offline); its /health tells it apart
    from a server that is still loading, so start-up does not sit out the whole wait."""
    with ScriptedServer(models="error", health={"status": "ok"}) as srv:
        t0 = time.monotonic()
        backend = OpenAIServerBackend(settings(srv.url, startup_wait_s=30.0))
        assert backend.dialect == "transformers" and time.monotonic() - t0 < 5.0


@pytest.mark.parametrize(("url", "match"), [
    ("", "needs model.url"),
    ("ftp://host", "http:// or https://"),
    ("http://user:pw@host:8000", "must not hold credentials"),
])
def test_bad_urls_are_config_errors(url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        OpenAIServerBackend(settings(url))


def test_base_url_gets_v1_once() -> None:
    assert api_base_url("http://h:8000") == "http://h:8000/v1"
    assert api_base_url("http://h:8000/v1/") == "http://h:8000/v1"
    assert api_base_url("https://proxy/llm") == "https://proxy/llm/v1"


# --- retries and errors -------------------------------------------------------------------------
def test_5xx_and_429_are_retried_with_backoff_then_succeed(server: ScriptedServer) -> None:
    backend = OpenAIServerBackend(settings(server.url, retries=3))
    server.script += [Reply(503, {"detail": "loading"}), Reply(429, {"detail": "busy"}, {"Retry-After": "0"}),
                      Reply(502, {"detail": "bad gateway"})]
    assert ask(backend).endswith("<answer>42%</answer>")
    assert len(server.posts()) == 4


def test_retries_are_bounded_and_named_in_the_error(server: ScriptedServer) -> None:
    backend = OpenAIServerBackend(settings(server.url, retries=2))
    server.default = Reply(500, {"detail": "CUDA error: device-side assert"})
    with pytest.raises(InferenceError, match=r"HTTP 500: CUDA error.*after 2 retries"):
        ask(backend)
    assert len(server.posts()) == 3


@pytest.mark.parametrize(("reply", "match"), [
    (Reply(400, {"detail": "Server is pinned to '/m'; requested 'x'."}),
     r"rejected the request for model 'served-model'.*pinned"),
    (Reply(404, {"message": "The model `x` does not exist."}), r"model 'served-model'.*HTTP 404.*does not exist"),
    (Reply(422, {"detail": "Unexpected fields in the request: {'top_k'}"}), r"vllm dialect.*422.*top_k"),
])
def test_4xx_is_not_retried_and_says_why(server: ScriptedServer, reply: Reply, match: str) -> None:
    backend = OpenAIServerBackend(settings(server.url, retries=3))
    server.default = reply
    with pytest.raises(InferenceError, match=match):
        ask(backend)
    assert len(server.posts()) == 1


@pytest.mark.parametrize(("reply", "match", "attempts"), [
    (Reply(raw=b'{"choices": [{"message": {"content": "<answer>4'), "not valid JSON", 1),
    (Reply(raw=b"<html>oops</html>"), "not valid JSON", 1),
    (Reply(body={"id": "x", "choices": []}), "no choices", 1),
    (Reply(body={"object": "error"}), "no choices", 1),
    (Reply(truncate=True), "connection lost", 3),  # cut mid-reply: a connection error, retried
])
def test_malformed_replies_are_inference_errors(server: ScriptedServer, reply: Reply, match: str,
                                                attempts: int) -> None:
    backend = OpenAIServerBackend(settings(server.url, retries=2))
    server.default = reply
    with pytest.raises(InferenceError, match=match):
        ask(backend)
    assert len(server.posts()) == attempts


@pytest.mark.parametrize(("finish_reason", "status", "percent"), [
    ("length", EstimateStatus.PARSE_FAILED, None),  # cut at the limit: the unclosed answer is not trusted
    ("stop", EstimateStatus.OK, 40),  # stopped by itself: the unclosed answer ending in % counts
])
def test_a_reply_without_usage_cut_at_the_token_limit_is_seen_as_cut(
        server: ScriptedServer, finish_reason: str, status: EstimateStatus, percent: int | None) -> None:
    backend = OpenAIServerBackend(settings(server.url))
    scorer = ProgressScorer(backend, load_protocol(), generation=GenerationSettings.greedy(20))
    episode = scorer.new_episode("push the block", ROLES)
    views = {r: np.zeros((48, 64, 3), dtype=np.uint8) for r in ROLES}
    scorer.score(episode, 1, views)
    server.default = Reply(body=completion("<think>moving</think><answer>40%", finish_reason=finish_reason,
                                           usage=False))
    estimate = scorer.score(episode, 2, views)
    assert (estimate.status, estimate.percent if status is EstimateStatus.OK else None) == (status, percent)
    if finish_reason == "length":
        assert estimate.parse_status == "truncated" and estimate.new_tokens == 20


def test_a_timeout_is_an_error_and_not_retried(server: ScriptedServer) -> None:
    backend = OpenAIServerBackend(settings(server.url, timeout_s=0.3, retries=3))
    gate = threading.Event()
    server.default = Reply(hold=gate)
    try:
        with pytest.raises(InferenceError, match=r"no reply within 0\.3 s"):
            ask(backend)
        assert len(server.posts()) == 1
    finally:
        gate.set()


def test_server_killed_mid_run_and_restarted_resumes_with_consistent_episode_state() -> None:
    srv = ScriptedServer()
    port = srv.port
    backend = OpenAIServerBackend(settings(srv.url, retries=1))
    scorer = ProgressScorer(backend, load_protocol(), generation=GenerationSettings.greedy(20))
    episode = scorer.new_episode("push the block", ROLES)
    views = {r: np.zeros((48, 64, 3), dtype=np.uint8) for r in ROLES}
    assert scorer.score(episode, 1, views).status is EstimateStatus.FIRST_FRAME
    assert scorer.score(episode, 2, views).status is EstimateStatus.OK
    srv.stop()  # killed
    failed = scorer.score(episode, 3, views)
    assert failed.status is EstimateStatus.ERROR and "cannot connect" in (failed.error or "")
    assert failed.step == 2 and episode.step == 2 and episode.previous is not None and episode.previous.stamp_ns == 2
    srv = ScriptedServer(port=port)  # restarted on the same port
    try:
        srv.default = Reply(body=completion("<think>later</think><answer>60%</answer>"))
        resumed = scorer.score(episode, 4, views)
        assert (resumed.status, resumed.step, resumed.percent, resumed.prev_percent, resumed.prev_stamp_ns) == (
            EstimateStatus.OK, 2, 60, 42, 2)
        assert "The task progress for the previous timestep is 42%" in json.dumps(srv.posts()[0].body)
    finally:
        srv.stop()


def test_cancel_aborts_a_request_in_flight_and_later_ones(server: ScriptedServer) -> None:
    backend = OpenAIServerBackend(settings(server.url, timeout_s=60.0))
    gate = threading.Event()
    server.default = Reply(hold=gate)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            ask(backend)
        except InferenceError as err:
            errors.append(err)

    thread = threading.Thread(target=call)
    thread.start()
    try:
        while not server.posts():
            threading.Event().wait(0.01)
        backend.cancel()
        thread.join(10)
        assert not thread.is_alive(), "cancel did not abort the request in flight"
        assert errors and "cancelled" in str(errors[0])
        with pytest.raises(InferenceError, match="cancelled"):
            ask(backend)
    finally:
        gate.set()


def test_cancel_aborts_a_connect_that_never_completes() -> None:
    """A listener whose accept queue is full drops further SYNs (Linux, tcp_abort_on_overflow 0):
    connect() hangs as for a black-holed host, deterministically on 127.0.0.1. The socket is not
    there to shut down until connect returns, so connect has its own short timeout and the cancel
    flag is checked right after it: the request ends within CONNECT_TIMEOUT_S, not model.timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    client = JsonHttpClient(f"http://127.0.0.1:{port}/v1", timeout_s=60.0,
                            retry=RetryPolicy(retries=3, backoff_s=0.01, backoff_max_s=0.02))
    errors: list[HttpError] = []

    def call() -> None:
        try:
            client.request("GET", "/models")
        except HttpError as err:
            errors.append(err)

    thread = threading.Thread(target=call)
    try:
        time.sleep(0.2)
        with socket.socket() as probe:  # the premise: a connect to it does hang
            probe.settimeout(0.3)
            with pytest.raises(TimeoutError):
                probe.connect(("127.0.0.1", port))
        t0 = time.monotonic()
        thread.start()
        time.sleep(0.3)
        client.cancel()
        thread.join(CONNECT_TIMEOUT_S + 3.0)
        assert not thread.is_alive(), "cancel did not end a request stuck in connect"
        assert time.monotonic() - t0 < CONNECT_TIMEOUT_S + 3.0
        assert errors and errors[0].kind == "cancelled"
    finally:
        thread.join(70)
        for sock in (*fillers, listener):
            sock.close()


def test_concurrent_batches_are_sent_in_parallel(server: ScriptedServer) -> None:
    backend = OpenAIServerBackend(settings(server.url, max_concurrency=4))
    arrived = threading.Barrier(4, timeout=10)

    def reply(seen: object) -> Reply:
        arrived.wait()  # all four must be in flight at once
        return Reply()

    server.default = reply
    replies = backend.generate([conversation()] * 4, [image()] * 4, GenerationSettings.greedy(20))
    assert len(replies) == 4 and len(server.posts()) == 4


# --- TLS --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return str(cert), str(key)


def test_https_with_a_ca_bundle(certificate: tuple[str, str]) -> None:
    with ScriptedServer(tls=certificate) as srv:
        with pytest.raises(ModelLoadError, match="TLS failed.*CERTIFICATE_VERIFY_FAILED.*model.ca_bundle"):
            OpenAIServerBackend(settings(srv.url))
        backend = OpenAIServerBackend(settings(srv.url, ca_bundle=certificate[0]))
        assert ask(backend).endswith("<answer>42%</answer>")
    with pytest.raises(ModelLoadError, match="is not a file"):
        OpenAIServerBackend(settings(srv.url, ca_bundle="/nonexistent.pem"))


# --- the API key --------------------------------------------------------------------------------
def test_the_api_key_is_sent_but_never_logged_described_or_estimated(
        server: ScriptedServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("SOLE_R1_TEST_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    backend = OpenAIServerBackend(settings(server.url, api_key_env="SOLE_R1_TEST_KEY", retries=0))
    assert ask(backend)
    assert server.posts()[0].headers["Authorization"] == f"Bearer {SECRET}"
    # a server that echoes the key back in its error must not make it leak
    server.default = lambda seen: Reply(401, {"detail": f"bad key {seen.headers['Authorization']}"})
    scorer = ProgressScorer(backend, load_protocol(), generation=GenerationSettings.greedy(20))
    episode = scorer.new_episode("g", ROLES)
    views = {r: np.zeros((48, 64, 3), dtype=np.uint8) for r in ROLES}
    scorer.score(episode, 1, views)
    failed = scorer.score(episode, 2, views)
    assert failed.status is EstimateStatus.ERROR and "refused the API key" in (failed.error or "")
    assert "$SOLE_R1_TEST_KEY" in (failed.error or "")
    result = RewardResult(status=failed.status, detail=failed.error or "", estimate=failed)
    shown = [result.to_json(), json.dumps(backend.describe()), caplog.text, repr(backend.__dict__.get("options"))]
    assert not any(SECRET in text for text in shown)


def test_a_named_but_unset_key_variable_is_a_load_error(server: ScriptedServer,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOLE_R1_TEST_KEY", raising=False)
    with pytest.raises(ModelLoadError, match=r"\$SOLE_R1_TEST_KEY, which is not set"):
        OpenAIServerBackend(settings(server.url, api_key_env="SOLE_R1_TEST_KEY"))


@pytest.mark.parametrize("key", [f"{SECRET}\r\nX-Injected: 1", f"{SECRET}\nmore", f"{SECRET}\tx", f"\x1b{SECRET}",
                                 f"{SECRET}\u2028x", f"{SECRET}\u00e9"])
def test_an_api_key_http_cannot_carry_is_refused_without_showing_it(
        server: ScriptedServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, key: str) -> None:
    monkeypatch.setenv("SOLE_R1_TEST_KEY", key)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ModelLoadError, match=r"\$SOLE_R1_TEST_KEY") as info:
        OpenAIServerBackend(settings(server.url, api_key_env="SOLE_R1_TEST_KEY"))
    shown = "".join(traceback.format_exception(info.value)) + repr(info.value) + caplog.text
    assert SECRET not in shown
    assert not server.seen  # refused before anything was sent


def test_a_header_value_http_cannot_carry_fails_without_showing_it(server: ScriptedServer) -> None:
    """The client's own guard: http.client's ValueError quotes the header value; the error
    raised instead names no value and keeps no exception that does."""
    client = JsonHttpClient(server.url + "/v1", timeout_s=5.0, headers={"Authorization": f"Bearer {SECRET}\r\nX: 1"})
    with pytest.raises(HttpError, match="not sent") as info:
        client.request("GET", "/models")
    err = info.value
    assert err.kind == "request" and err.__cause__ is None and err.__context__ is None
    assert SECRET not in "".join(traceback.format_exception(err)) + repr(err)


# --- policy details -----------------------------------------------------------------------------
def test_backoff_doubles_up_to_its_cap_and_retry_after_wins() -> None:
    policy = RetryPolicy(retries=5, backoff_s=0.5, backoff_max_s=4.0)
    assert [policy.wait_s(k, None) for k in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert policy.wait_s(0, 3.0) == 3.0
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_the_server_path_imports_neither_torch_nor_transformers() -> None:
    code = ("import sys; import sole_r1_ros.ros.reward_node, sole_r1_ros.core.scorer, sole_r1_ros.cli.score_bag, "
            "sole_r1_ros.backends.openai_server, sole_r1_ros.offline.many_bags; "
            "from sole_r1_ros.backends.registry import backend_class; backend_class('server'); "
            "bad = sorted(m for m in ('torch', 'transformers') if m in sys.modules); print(bad); sys.exit(bool(bad))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[3])
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_server_slower_than_the_period_never_queues_stale_work(server: ScriptedServer) -> None:
    """Rate mode at 20 Hz against a server that takes 0.3 s per reply: each step scores the
    freshest frame once the previous reply is in; nothing waits in a queue."""
    from sensor_msgs.msg import Image as ImageMsg

    from sole_r1_ros.messages.image_codec import encode_image
    from sole_r1_ros.pipeline.frame_buffer import FrameSelector
    from sole_r1_ros.pipeline.worker import RewardWorker
    from sole_r1_ros.settings.groups import RewardSettings, WorkerSettings

    def slow(seen: object) -> Reply:
        threading.Event().wait(0.3)
        return Reply()

    server.default = slow
    backend = OpenAIServerBackend(settings(server.url))
    selector = FrameSelector.create(ROLES, maxlen=8)
    results: list[RewardResult] = []
    worker = RewardWorker(ProgressScorer(backend, load_protocol(), generation=GenerationSettings.greedy(20)),
                          selector, config=WorkerSettings(period_s=0.05, align_tolerance_s=0.02, max_frame_age_s=1.0),
                          reward_config=RewardSettings(), clock=time.monotonic_ns, emit=results.append)
    worker.set_goal("push the block")
    pixels = encode_image(np.zeros((48, 64, 3), dtype=np.uint8), "rgb8")
    worker.start()
    try:
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            stamp = time.monotonic_ns()
            for role in ROLES:
                msg = ImageMsg(**pixels)
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
                worker.push_frame(role, stamp, msg, stamp)
            time.sleep(0.02)
        wait_idle = time.monotonic() + 5.0
        while worker.stats.busy and time.monotonic() < wait_idle:
            time.sleep(0.01)
    finally:
        assert worker.stop(timeout_s=5.0)
    scored = [r.estimate for r in results if r.estimate is not None and r.estimate.status is EstimateStatus.OK]
    assert len(scored) >= 3
    assert len(server.posts()) == len(scored)  # every request answered and published, none left waiting
    gaps = [(b.stamp_ns - a.stamp_ns) / 1e9 for a, b in zip(scored, scored[1:])]
    # while frames flow, the next step takes the frame that is fresh when the reply is in (≥ 0.3 s
    # later), never a queued one; only the step after the cameras stopped may take an older frame
    assert min(gaps[:-1]) >= 0.25
