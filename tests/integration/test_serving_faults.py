"""Fault injection against a running `tfrec serve`, as an operator and an attacker would try it.

Every test runs the server as its own process over copies of a real export, keeps clients asking
while it breaks things, and checks three things: the answer each fault gets (its gRPC or HTTP
status), that no good request failed, and that the server is alive with its memory and threads
bounded.  The figures (requests answered, failures, peak memory, threads) are printed and
recorded by `benchmarks/serving_faults.py`, which runs these same scenarios.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tests.conftest import REPO, run_cli_batch

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


FIGURES: list[dict] = []  # what each scenario measured; written out for benchmarks/serving_faults.py


def record(scenario: str, **figures) -> None:
    FIGURES.append({"scenario": scenario, **figures})


@pytest.fixture(scope="module", autouse=True)
def figures_file():
    yield
    path = os.environ.get("TFREC_FAULT_FIGURES")
    if path and FIGURES:
        import json

        with open(path, "w") as f:
            json.dump(FIGURES, f, indent=1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """A real next-item export twice: top 5 (`a`) and top 3 (`b`), the same trained weights."""
    from tests.integration.test_training_cli import SMALL
    from tfrec.data.dataset import prepare
    from tfrec.data.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("faults")
    prepare(generate_synthetic(num_users=60, num_items=30, seed=3), str(root / "data"))
    results = run_cli_batch(
        ("finetune", "--task", "next-item", "--data", root / "data", "--from-scratch", "--out", root / "run",
         "--epochs", "1", *SMALL),
        ("export", "--model", root / "run", "--serving-root", root / "a", "--name", "seq", "--top-k", "5"),
        ("export", "--model", root / "run", "--serving-root", root / "b", "--name", "seq", "--top-k", "3"))
    for r in results:
        assert r.returncode == 0, r.stderr[-2000:]
    return {"a": root / "a" / "seq" / "1", "b": root / "b" / "seq" / "1", "root": root}


class Served:
    """`tfrec serve` in its own process, with clients and its process figures."""

    def __init__(self, tmp_path, *flags: str, base=None, config=None, rest=True):
        import psutil

        self.grpc_port, self.rest_port = free_port(), free_port() if rest else 0
        where = [f"--model_config_file={config}"] if config else ["--model_name=seq", f"--model_base_path={base}"]
        self.log = open(tmp_path / f"serve-{self.grpc_port}.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tfrec", "serve", f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}",
             *where, "--file_system_poll_wait_seconds=0.2", "--tensorflow_intra_op_parallelism=1",
             "--tensorflow_inter_op_parallelism=1", *flags],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO)
        self.ps = psutil.Process(self.proc.pid)
        self.peak_rss = 0
        from tfrec.serving import Client

        self.client = Client(f"127.0.0.1:{self.grpc_port}", timeout=20, retries=0)
        self.rest = f"http://127.0.0.1:{self.rest_port}"
        self.log_path = tmp_path / f"serve-{self.grpc_port}.log"

    def wait_for(self, condition, timeout: float = 90.0, what: str = "the server") -> None:
        end = time.time() + timeout
        while time.time() < end:
            assert self.proc.poll() is None, self.output()
            try:
                if condition():
                    return
            except Exception:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{what} never happened; server log:\n{self.output()}")

    def states(self) -> dict:
        return {s["version"]: (s["state"], s["error"]) for s in self.client.status("seq")}

    def sample(self) -> tuple[float, int]:
        rss = self.ps.memory_info().rss / 2**20
        self.peak_rss = max(self.peak_rss, rss)
        return rss, self.ps.num_threads()

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text()[-4000:]

    def close(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self.log.close()


@pytest.fixture
def serve(tmp_path):
    started = []

    def start(*flags, **kw):
        s = Served(tmp_path, *flags, **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        s.close()


class Load:
    """Clients asking for recommendations until stopped; every failure is kept."""

    def __init__(self, target: str, threads: int = 4):
        from tfrec.serving import Client

        self.answered, self.failed, self.sizes = 0, [], set()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.clients = [Client(target, timeout=20, retries=0) for _ in range(threads)]
        self.threads = [threading.Thread(target=self._ask, args=(c,)) for c in self.clients]

    def _ask(self, client) -> None:
        while not self.stop.is_set():
            try:
                out = client.predict("seq", {"history": np.array([["i1", "i2"]], dtype=object)})
                with self.lock:
                    self.answered += 1
                    self.sizes.add(out["item_ids"].shape[1])
            except Exception as e:  # counted: the test names it
                with self.lock:
                    self.failed.append(repr(e))
            time.sleep(0.005)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(30)
        for c in self.clients:
            c.close()


def forbidden_export(path) -> None:
    """A SavedModel with the export's contract whose signature reads a file of the author's choosing."""
    import tensorflow as tf

    class Reader(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="history")])
        def serve(self, history):
            secret = tf.io.read_file("/etc/hostname")
            n = tf.shape(history)[0]
            return {"item_ids": tf.fill([n, 5], secret), "scores": tf.zeros([n, 5])}

    m = Reader()
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})


def test_broken_new_versions_under_load_never_take_the_model_offline(exports, serve, tmp_path):
    """Corrupt, half-written and op-forbidden versions arrive while four clients ask: not one request
    fails, the last good version keeps serving, failed loads are retried and a completed one goes live."""
    base = tmp_path / "seq"
    shutil.copytree(exports["a"], base / "1")
    s = serve("--enable_batching", "--max_num_load_retries=4", "--load_retry_interval_micros=1500000", base=base)
    s.wait_for(lambda: s.states()[1][0] == "AVAILABLE", what="version 1 AVAILABLE")
    rss0, threads0 = s.sample()
    with Load(f"127.0.0.1:{s.grpc_port}") as load:
        # a corrupt saved_model.pb: retried, then END with its error; version 1 stays
        shutil.copytree(exports["a"], base / "2")
        (base / "2" / "saved_model.pb").write_bytes(b"\x08\x01 this is not a SavedModel")
        s.wait_for(lambda: s.states()[2][0] == "END", what="version 2 given up")
        assert "failed to load version 2" in s.states()[2][1]
        assert s.states()[1][0] == "AVAILABLE"
        s.sample()
        # a half-written version: its variables are not there yet; retried, then completed, it goes live
        shutil.copytree(exports["a"], tmp_path / "partial")
        shutil.move(str(tmp_path / "partial" / "variables"), str(tmp_path / "variables-later"))
        os.replace(tmp_path / "partial", base / "3")
        s.wait_for(lambda: "version 3 failed to load (attempt 1" in s.output(), what="a failed attempt at version 3")
        assert s.states()[3][0] == "LOADING" and s.states()[1][0] == "AVAILABLE"
        shutil.move(str(tmp_path / "variables-later"), str(base / "3" / "variables"))
        s.wait_for(lambda: s.states()[3][0] == "AVAILABLE", what="version 3 AVAILABLE after a retry")
        s.wait_for(lambda: s.states()[1][0] == "END", what="version 1 unloaded once 3 served")
        # a version whose graph reads a file: refused before it runs anything; version 3 stays
        forbidden_export(base / "4")
        s.wait_for(lambda: s.states()[4][0] == "END", what="version 4 refused")
        assert "ReadFile" in s.states()[4][1] or "ReadFile" in s.output()
        assert s.states()[3][0] == "AVAILABLE"
        threads1 = s.sample()[1]
        time.sleep(0.5)
    record("corrupt, half-written and op-forbidden versions under 4 clients", answered=load.answered,
           failed=len(load.failed), rss_idle_mb=round(rss0), rss_peak_mb=round(s.peak_rss), threads_idle=threads0,
           threads_end=threads1)
    assert not load.failed, load.failed[:3]
    assert load.answered > 50
    assert s.proc.poll() is None


def test_a_version_replaced_in_place_with_batching_on_answers_from_the_new_model(exports, serve, tmp_path):
    base = tmp_path / "seq"
    shutil.copytree(exports["a"], base / "1")
    s = serve("--enable_batching", "--batching_parameters_file=" + os.path.join(REPO, "serving",
                                                                                "batching_parameters.txt"), base=base)
    s.wait_for(lambda: s.states()[1][0] == "AVAILABLE", what="version 1 AVAILABLE")
    with Load(f"127.0.0.1:{s.grpc_port}") as load:
        time.sleep(2.0)
        threads_before = s.sample()[1]
        assert load.sizes == {5}
        for name in ("saved_model.pb", "fingerprint.pb"):  # the top-3 graph, swapped in atomically
            shutil.copy(exports["b"] / name, tmp_path / name)
            os.replace(tmp_path / name, base / "1" / name)
        s.wait_for(lambda: "replaced in place" in s.output(), what="the in-place replacement")
        answered = load.answered
        s.wait_for(lambda: load.answered > answered + 20)
        with load.lock:
            load.sizes.clear()
        s.wait_for(lambda: load.answered > answered + 60)
        assert load.sizes == {3}  # every answer now comes from the new graph
        s.wait_for(lambda: "the replaced copy of version 1 unloaded" in s.output(), what="the old copy unloaded")
        # its two batcher threads ended with it (they used to live on; one thread of slack for the pools)
        s.wait_for(lambda: s.sample()[1] <= threads_before + 1, timeout=30, what="the old batcher threads ending")
        threads_after = s.sample()[1]
    record("a version replaced in place, batching on, 4 clients", answered=load.answered, failed=len(load.failed),
           threads_before=threads_before, threads_after=threads_after, rss_peak_mb=round(s.peak_rss))
    assert not load.failed, load.failed[:3]
    assert s.states()[1][0] == "AVAILABLE"


def test_hostile_requests_get_clear_statuses_and_the_server_stays_bounded(exports, serve, tmp_path):
    import grpc
    from tensorflow.core.framework import tensor_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2

    base = tmp_path / "seq"
    shutil.copytree(exports["a"], base / "1")
    params = tmp_path / "batching.txt"
    params.write_text("max_batch_size { value: 64 } batch_timeout_micros { value: 400000 } "
                      "num_batch_threads { value: 1 } pad_variable_length_inputs: true")
    s = serve("--enable_batching", f"--batching_parameters_file={params}", "--max_request_rows=1000",
              "--monitoring_config_file=" + os.path.join(REPO, "serving", "monitoring.config"), base=base)
    s.wait_for(lambda: s.states()[1][0] == "AVAILABLE", what="version 1 AVAILABLE")
    rss0, threads0 = s.sample()

    def predict(proto=None, signature="", timeout=20, rows=None):
        request = predict_pb2.PredictRequest()
        request.model_spec.name, request.model_spec.signature_name = "seq", signature
        if proto is None:
            proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"i1"] * (rows or 1))
            proto.tensor_shape.dim.add(size=rows or 1)
            proto.tensor_shape.dim.add(size=1)
        request.inputs["history"].CopyFrom(proto)
        try:
            s.client.predictions.Predict(request, timeout=timeout)
            return "OK"
        except grpc.RpcError as e:
            return e.code().name

    lying = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"x"])
    lying.tensor_shape.dim.add(size=100_000)
    lying.tensor_shape.dim.add(size=100_000)  # 10^10 elements declared by a 40-byte message
    short = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"x", b"y"])
    short.tensor_shape.dim.add(size=1)
    short.tensor_shape.dim.add(size=3)
    assert lying.ByteSize() < 40
    for _ in range(20):
        assert predict(lying) == "RESOURCE_EXHAUSTED"
    assert predict(short) == "INVALID_ARGUMENT"
    assert predict(rows=1001) == "RESOURCE_EXHAUSTED"  # over --max_request_rows
    assert predict(rows=65) == "INVALID_ARGUMENT"  # over max_batch_size: TF Serving's answer
    assert predict(signature="nope") == "FAILED_PRECONDITION"
    # a deadline shorter than the batching wait: the server answers DEADLINE_EXCEEDED itself and counts it
    assert predict(timeout=0.15) == "DEADLINE_EXCEEDED"
    import urllib.request

    metrics = s.rest + "/monitoring/prometheus/metrics"
    s.wait_for(lambda: 'status="DEADLINE_EXCEEDED"' in urllib.request.urlopen(metrics, timeout=10).read().decode(),
               what="the server-side deadline")
    assert predict() == "OK"
    rss1, threads1 = s.sample()
    record("shape-lying, oversized, deadline-expired and malformed gRPC requests", rss_before_mb=round(rss0),
           rss_after_mb=round(rss1), threads_before=threads0, threads_after=threads1, server_alive=s.proc.poll() is None)
    assert rss1 - rss0 < 300, (rss0, rss1)  # no request expanded anything large
    assert s.proc.poll() is None


def _raw(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Sends `data` on one connection and reads until the server closes it (or `timeout`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
        c.sendall(data)
        out = b""
        try:
            while chunk := c.recv(65536):
                out += chunk
        except socket.timeout:
            out += b"<open>"
    return out


def test_rest_abuse_gets_http_answers_and_costs_no_threads(exports, serve, tmp_path):
    base = tmp_path / "seq"
    shutil.copytree(exports["a"], base / "1")
    s = serve("--rest_api_timeout_in_ms=1500", "--rest_api_num_threads=4", base=base)
    s.wait_for(lambda: s.states()[1][0] == "AVAILABLE", what="version 1 AVAILABLE")
    port = s.rest_port
    post = b"POST /v1/models/seq:predict HTTP/1.1\r\nHost: x\r\n"
    for head, status in ((b"Content-Length: -1\r\n", b"400"), (b"Content-Length: abc\r\n", b"400"),
                         (b"", b"411"), (b"Content-Length: 99999999999\r\n", b"413"),
                         (b"Content-Length: 1\r\nContent-Length: 2\r\n", b"400")):
        answer = _raw(port, post + head + b"\r\n")
        assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
        assert b"Connection: close" in answer and not answer.endswith(b"<open>")  # closed, nothing left behind
    # keep-alive after an error: the second request on the connection gets its own, correct answer
    body = b'{"instances": [["i1"]]}'
    bad = b"POST /v1/models/nope:predict HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    good = b"GET /v1/models/seq HTTP/1.1\r\nConnection: close\r\n\r\n"
    answer = _raw(port, bad + good)
    assert answer.startswith(b"HTTP/1.1 404") and answer.count(b"HTTP/1.1 ") == 2
    assert b'"state": "AVAILABLE"' in answer.split(b"HTTP/1.1 200", 1)[1]
    # a version path TF Serving's regex does not match, a non-ASCII digit among them
    assert _raw(port, "GET /v1/models/seq/versions/² HTTP/1.1\r\n\r\n".encode()).startswith(b"HTTP/1.1 400")
    # 200 slow clients: each holds a socket, not a thread, and is answered 408 when its time is up
    _, threads0 = s.sample()
    slow = []
    for _ in range(200):
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        c.sendall(post + b"Content-Length: 100\r\n\r\n{\"inst")
        slow.append(c)
    time.sleep(0.3)
    _, threads1 = s.sample()
    from tfrec.serving import RestClient

    started = time.perf_counter()
    assert RestClient(s.rest, timeout=10).recommend("seq", [["i1"]], k=2)  # answered beside them
    beside = time.perf_counter() - started
    record("200 half-sent REST requests", threads_before=threads0, threads_with_200_slow=threads1,
           ms_for_a_request_beside_them=round(beside * 1000, 1), rss_peak_mb=round(s.peak_rss))
    assert beside < 1.0
    answers = []
    for c in slow:
        try:
            answers.append(c.recv(200))
        finally:
            c.close()
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), {a[:20] for a in answers}
    assert threads1 - threads0 <= 8, (threads0, threads1)
    assert s.proc.poll() is None


def test_reload_requests_are_validated_and_can_be_switched_off(exports, serve, tmp_path):
    from tensorflow_serving.apis import model_management_pb2

    from tfrec.serving import ServingClientError

    allowed = tmp_path / "allowed"
    shutil.copytree(exports["a"], allowed / "seq" / "1")
    shutil.copytree(exports["a"], tmp_path / "elsewhere" / "1")
    s = serve(f"--model_base_path_roots={allowed}", base=allowed / "seq")
    s.wait_for(lambda: s.states()[1][0] == "AVAILABLE", what="version 1 AVAILABLE")

    def reload(text: str) -> str:
        from google.protobuf import text_format

        request = model_management_pb2.ReloadConfigRequest()
        text_format.Parse(text, request.config) if text else None
        try:
            s.client._call(s.client.models.HandleReloadConfigRequest, request)
            return "OK"
        except ServingClientError as e:
            return e.code

    model = 'config {{ name: "{name}" base_path: "{path}" model_platform: "tensorflow" {extra} }}'
    seq = model.format(name="seq", path=allowed / "seq", extra="")
    assert reload("") == "INVALID_ARGUMENT"  # no ModelConfigList: TF Serving's answer, nothing unloaded
    assert reload(f"model_config_list {{ {seq} {seq} }}") == "INVALID_ARGUMENT"  # a name twice
    assert reload(f"model_config_list {{ {model.format(name='x', path='relative/x', extra='')} }}") == \
        "INVALID_ARGUMENT"
    assert reload(f"model_config_list {{ {model.format(name='x', path=tmp_path / 'elsewhere', extra='')} }}") == \
        "PERMISSION_DENIED"  # outside --model_base_path_roots
    labelled = model.format(name="seq", path=allowed / "seq", extra='version_labels { key: "stable" value: 7 }')
    assert reload(f"model_config_list {{ {labelled} }}") == "FAILED_PRECONDITION"  # version 7 is not AVAILABLE
    assert s.states()[1][0] == "AVAILABLE" and s.client.recommend("seq", [["i1"]], k=1)
    stable = model.format(name="seq", path=allowed / "seq", extra='version_labels { key: "stable" value: 1 }')
    assert reload(f"model_config_list {{ {stable} }}") == "OK"
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.version_label = "seq", "stable"
    from tfrec.serving import tensors

    tensors.to_proto(np.array([["i1"]], dtype=object), request.inputs["history"])
    assert s.client.predictions.Predict(request, timeout=20).model_spec.version.value == 1
    request.model_spec.version_label = "nope"
    with pytest.raises(Exception, match="INVALID_ARGUMENT"):
        s.client._call(s.client.predictions.Predict, request)
    off = serve("--enable_reload_config_request=false", base=allowed / "seq", rest=False)
    off.wait_for(lambda: off.states()[1][0] == "AVAILABLE", what="version 1 AVAILABLE")
    request = model_management_pb2.ReloadConfigRequest()
    request.config.model_config_list.config.add(name="seq", base_path=str(allowed / "seq"), model_platform="tensorflow")
    with pytest.raises(ServingClientError) as e:
        off.client._call(off.client.models.HandleReloadConfigRequest, request)
    assert e.value.code == "UNIMPLEMENTED"


def test_metric_labels_cannot_be_injected_and_unknown_names_are_not_kept(exports, serve, tmp_path):
    import urllib.error
    import urllib.parse
    import urllib.request

    base = tmp_path / "seq"
    shutil.copytree(exports["a"], base / "1")
    s = serve("--monitoring_config_file=" + os.path.join(REPO, "serving", "monitoring.config"), base=base)
    s.wait_for(lambda: s.states()[1][0] == "AVAILABLE", what="version 1 AVAILABLE")
    s.client.recommend("seq", [["i1"]], k=1)
    page = lambda: urllib.request.urlopen(s.rest + "/monitoring/prometheus/metrics", timeout=10).read().decode()  # noqa
    before = len(page().splitlines())
    evil = 'x"} 1\nfake_metric{a="b'
    for name in [evil] + [f"random-{i}" for i in range(200)]:
        with pytest.raises(Exception):
            s.client.predict(name, {"history": np.array([["i1"]], dtype=object)})
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(urllib.request.Request(
                f"{s.rest}/v1/models/{urllib.parse.quote(name, safe='')}:predict", data=b'{"instances": [["i1"]]}'),
                timeout=10)
    text = page()
    record("a crafted and 200 random model names", metric_lines_before=before, metric_lines_after=len(text.splitlines()))
    assert "fake_metric" not in text and "random-" not in text
    assert len(text.splitlines()) == before
    assert ':tensorflow:serving:request_count{model_name="seq",status="OK"} 1' in text


def test_readiness_health_and_sigterm_drain(exports, serve, tmp_path):
    import urllib.error
    import urllib.request

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    base = tmp_path / "seq"
    base.mkdir()
    log = tmp_path / "access.log"
    s = serve("--enable_grpc_healthcheck_service", f"--access_log_file={log}", base=base)
    channel = grpc.insecure_channel(f"127.0.0.1:{s.grpc_port}")
    health = health_pb2_grpc.HealthStub(channel)
    check = lambda: health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status  # noqa: E731

    def ready() -> int:
        try:
            return urllib.request.urlopen(s.rest + "/readyz", timeout=5).status
        except urllib.error.HTTPError as e:
            return e.code

    s.wait_for(lambda: urllib.request.urlopen(s.rest + "/healthz", timeout=5).status == 200, what="the server up")
    assert ready() == 503 and check() == health_pb2.HealthCheckResponse.NOT_SERVING  # no version yet
    shutil.copytree(exports["a"], tmp_path / "incoming")
    os.replace(tmp_path / "incoming", base / "1")
    s.wait_for(lambda: ready() == 200, what="ready once version 1 is AVAILABLE")
    s.wait_for(lambda: check() == health_pb2.HealthCheckResponse.SERVING, what="gRPC health SERVING")
    assert health.Check(health_pb2.HealthCheckRequest(service="tensorflow.serving.PredictionService"),
                        timeout=5).status == health_pb2.HealthCheckResponse.SERVING
    # what a request holds never reaches the log or the server's output (data minimisation)
    from tfrec.serving.client import Client, RestClient

    secret = ["private-item-4711", "private-item-4712"]  # unknown ids: dropped, the request answered
    assert len(Client(f"127.0.0.1:{s.grpc_port}").recommend("seq", [secret])[0]) > 0
    assert len(RestClient(s.rest).recommend("seq", [secret])[0]) > 0
    with Load(f"127.0.0.1:{s.grpc_port}", threads=2) as load:
        time.sleep(0.5)
        s.proc.terminate()  # SIGTERM: drain, then exit 0
        assert s.proc.wait(60) == 0
    assert load.answered > 0
    assert "stopped" in s.output()
    lines = log.read_text().splitlines()
    assert any(" grpc " in ln and " Predict model=seq OK " in ln for ln in lines), lines[:3]
    assert any(" rest " in ln and "GET /readyz" in ln for ln in lines)
    assert any(" rest " in ln and "POST /v1/models/seq:predict" in ln for ln in lines)
    assert not [text for text in (log.read_text(), s.output()) if "private-item" in text]
    channel.close()


def test_tls_from_an_ssl_config_file(exports, serve, tmp_path):
    import grpc

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not on PATH to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ssl = tmp_path / "ssl.config"
    ssl.write_text(f'server_key: "{key.read_text().replace(chr(10), chr(92) + "n")}"\n'
                   f'server_cert: "{cert.read_text().replace(chr(10), chr(92) + "n")}"\n')
    base = tmp_path / "seq"
    shutil.copytree(exports["a"], base / "1")
    s = serve(f"--ssl_config_file={ssl}", base=base, rest=False)
    from tensorflow_serving.apis import model_service_pb2_grpc
    from tensorflow_serving.apis.get_model_status_pb2 import GetModelStatusRequest

    channel = grpc.secure_channel(f"localhost:{s.grpc_port}", grpc.ssl_channel_credentials(cert.read_bytes()))
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = GetModelStatusRequest()
    request.model_spec.name = "seq"
    s.wait_for(lambda: stub.GetModelStatus(request, timeout=5).model_version_status[0].state == 30,
               what="an AVAILABLE version over TLS")
    with pytest.raises(Exception):  # plain text is refused on the TLS port
        s.client.status("seq")
    channel.close()


def test_calls_over_grpc_max_concurrent_rpcs_are_refused_at_once(exports, serve, tmp_path):
    """The gRPC queue is bounded: past --grpc_max_concurrent_rpcs a call is RESOURCE_EXHAUSTED, not queued."""
    from concurrent.futures import ThreadPoolExecutor

    from tfrec.serving import Client, ServingClientError

    base = tmp_path / "seq"
    shutil.copytree(exports["a"], base / "1")
    params = tmp_path / "batching.txt"  # each call waits 0.8 s for company in the batching queue
    params.write_text("max_batch_size { value: 64 } batch_timeout_micros { value: 800000 } num_batch_threads { value: 1 }")
    s = serve("--enable_batching", f"--batching_parameters_file={params}", "--grpc_max_concurrent_rpcs=2",
              "--grpc_max_threads=2", base=base, rest=False)
    s.wait_for(lambda: s.states()[1][0] == "AVAILABLE", what="version 1 AVAILABLE")

    def ask(_):
        client = Client(f"127.0.0.1:{s.grpc_port}", timeout=20, retries=0)
        try:
            client.predict("seq", {"history": np.array([["i1"]], dtype=object)})
            return "OK"
        except ServingClientError as e:
            return e.code
        finally:
            client.close()

    with ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(ask, range(6)))
    assert codes.count("OK") >= 1 and codes.count("RESOURCE_EXHAUSTED") >= 1, codes
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, codes
    assert ask(0) == "OK"  # and the server answers again once the burst has passed
