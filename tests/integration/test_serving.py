"""tfrec serve and the clients: TF Serving's gRPC and REST APIs over exported models."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, run_cli, run_cli_batch
from tests.integration.test_cli import assert_clean_error

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", params=["tfrec serve", "tensorflow_model_server"])
def server(request, trained, tmp_path_factory):
    """The same client suite against the embedded server and, when it is installed, the real one."""
    real = request.param == "tensorflow_model_server"
    if real and shutil.which("tensorflow_model_server") is None:
        pytest.skip("tensorflow_model_server is not on PATH: the client suite ran against tfrec serve only")
    data, runs, _ = trained
    root = tmp_path_factory.mktemp("serving")
    for r in run_cli_batch(*(("export", "--model", runs[task], "--serving-root", root, "--name", name, "--top-k", "10")
                             for name, task in (("seq", "next-item"), ("rank", "ranking")))):
        assert r.returncode == 0, r.stderr[-2000:]
    config = root / "models.config"
    config.write_text(f"""model_config_list {{
  config {{ name: "seq" base_path: "{root}/seq" model_platform: "tensorflow"
           model_version_policy {{ latest {{ num_versions: 2 }} }} version_labels {{ key: "stable" value: 1 }} }}
  config {{ name: "rank" base_path: "{root}/rank" model_platform: "tensorflow" }}
}}""")
    grpc_port, rest_port = free_port(), free_port()
    binary = ["tensorflow_model_server"] if real else [sys.executable, "-m", "tfrec", "serve"]
    poll = "1" if real else "0.3"  # the real server takes whole seconds
    proc = subprocess.Popen([*binary, f"--port={grpc_port}", f"--rest_api_port={rest_port}",
                             f"--model_config_file={config}", f"--file_system_poll_wait_seconds={poll}",
                             "--allow_version_labels_for_unavailable_models", "--max_num_load_retries=0",
                             "--enable_batching", "--batching_parameters_file="
                             + os.path.join(REPO, "serving", "batching_parameters.txt"), "--monitoring_config_file="
                             + os.path.join(REPO, "serving", "monitoring.config"),
                             "--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    from tfrec.serving import Client

    client = Client(f"127.0.0.1:{grpc_port}", timeout=10)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if client.status("seq")[0]["state"] == "AVAILABLE" and client.status("rank"):
                break
        except Exception:
            time.sleep(0.5)
    yield {"real": real, "proc": proc, "client": client, "rest": f"http://127.0.0.1:{rest_port}", "root": root, "data": data,
           "grpc": f"127.0.0.1:{grpc_port}"}
    client.close()
    if proc.poll() is None:
        proc.kill()


def test_grpc_and_rest_answer_like_the_export(server):
    from tfrec.serving import RestClient

    client = server["client"]
    recs = client.recommend("seq", [["i1", "i2"], [""]], k=5)
    assert len(recs) == 2 and len(recs[0]) == 5
    assert not {"i1", "i2"} & {i for i, _ in recs[0]}
    assert [s for _, s in recs[0]] == sorted((s for _, s in recs[0]), reverse=True)
    rest = RestClient(server["rest"], timeout=10)
    via_rest = rest.recommend("seq", [["i1", "i2"], [""]], k=5)
    assert [[i for i, _ in row] for row in via_rest] == [[i for i, _ in row] for row in recs]
    assert [s for row in via_rest for _, s in row] == pytest.approx([s for row in recs for _, s in row])
    meta = client.metadata("seq")
    assert meta["serving_default"]["inputs"] == {"history": ("string", [-1, -1])}
    assert meta["serving_default"]["outputs"]["item_ids"] == ("string", [-1, 10])
    assert rest.metadata("seq") == meta  # TF Serving's snake_case JSON, read to the same description
    # the ranking model keeps no per-user parameter (tasks.user_params: false): users come as their features
    profiles = [["age=30", "segment=s1"], []]
    scores = client.score("rank", None, ["i1", "i3"], [["i2"], []], [1_600_000_000, 1_600_000_000],
                          user_features=profiles)
    assert len(scores) == 2 and scores == pytest.approx(rest.score("rank", None, ["i1", "i3"], [["i2"], []],
                                                                   [1_600_000_000, 1_600_000_000],
                                                                   user_features=profiles))
    from tensorflow_serving.apis import regression_pb2

    request = regression_pb2.RegressionRequest()
    request.model_spec.name, request.model_spec.signature_name = "rank", "regress"
    ex = request.input.example_list.examples.add()
    ex.features.feature["user_features"].bytes_list.value.extend([b"age=30", b"segment=s1"])
    ex.features.feature["item_id"].bytes_list.value.append(b"i1")
    ex.features.feature["history"].bytes_list.value.append(b"i2")
    ex.features.feature["timestamp"].int64_list.value.append(1_600_000_000)
    result = client.predictions.Regress(request, timeout=10)
    assert result.result.regressions[0].value == pytest.approx(scores[0], rel=1e-5)


def test_the_rerank_signature_defaults_its_knobs_over_grpc_and_names_them_over_rest(server):
    import urllib.error
    import urllib.request

    import numpy as np

    from tfrec.serving import ServingClientError

    client = server["client"]
    history = np.array([["i1", "i2"], ["", "i3"]], dtype=object)
    plain = client.predict("seq", {"history": history})
    # the knobs left out: the SignatureDef's defaults (0) answer as serving_default does (batching on)
    same = client.predict("seq", {"history": history}, signature="rerank")
    assert same["item_ids"].tolist() == plain["item_ids"].tolist()
    np.testing.assert_allclose(same["scores"], plain["scores"], rtol=1e-6)
    knobs = {"diversity": np.array([1.0, 0.0], np.float32), "popularity_penalty": np.array([0.0, 0.0], np.float32)}
    diverse = client.predict("seq", {"history": history, **knobs}, signature="rerank")
    assert diverse["item_ids"][1].tolist() == plain["item_ids"][1].tolist()  # row 2's knobs are 0
    row = diverse["item_ids"][0].tolist()
    # λ = 1: the best-scored item first, then the least like those chosen; the history's items still out
    assert row[0] == plain["item_ids"][0][0] and row != plain["item_ids"][0].tolist() and len(set(row)) == len(row)
    assert not {b"i1", b"i2"} & set(row)
    # scores stay the model's: each chosen item's score is what serving_default gives it where it lists it
    listed = dict(zip(plain["item_ids"][0].tolist(), plain["scores"][0].tolist()))
    assert all(score == pytest.approx(listed[i], rel=1e-5) for i, score in zip(row, diverse["scores"][0]) if i in listed)
    with pytest.raises(ServingClientError) as e:
        client.predict("seq", {"history": history, "diversity": np.array([2.0, 0.0], np.float32)}, signature="rerank")
    assert e.value.code == "INVALID_ARGUMENT" and "diversity must be between 0 and 1" in str(e.value)
    # TF Serving's REST API reads every input a signature names: the knobs are required there
    url = server["rest"] + "/v1/models/seq:predict"
    body = {"signature_name": "rerank", "instances": [{"history": ["i1", "i2"]}]}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(request, timeout=10)
    assert e.value.code == 400 and "keys must be equal to" in json.loads(e.value.read())["error"]
    body["instances"] = [{"history": ["i1", "i2"], "diversity": 1.0, "popularity_penalty": 0.0}]
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    answer = json.loads(urllib.request.urlopen(request, timeout=10).read())["predictions"][0]
    assert [i.encode() for i in answer["item_ids"]] == row


def test_concurrent_requests_batched_together_get_their_own_answers(server):
    from concurrent.futures import ThreadPoolExecutor

    client = server["client"]
    histories = [["i1"], ["i2", "i3", "i4"], [], ["i5", "i6"], ["i7", "i8", "i9", "i10", "i11"], ["i12"]] * 4
    alone = [client.recommend("seq", [h], k=5)[0] for h in histories[:6]]
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda h: client.recommend("seq", [h], k=5)[0], histories))
    for i, got in enumerate(together):
        want = alone[i % 6]
        assert [x for x, _ in got] == [x for x, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-4, abs=1e-5)
    import urllib.request

    text = urllib.request.urlopen(server["rest"] + "/monitoring/prometheus/metrics", timeout=10).read().decode()
    line = [ln for ln in text.splitlines()
            if ln.startswith(':tensorflow:serving:request_count{model_name="seq",status="OK"}')][0]
    assert int(line.rsplit(" ", 1)[1]) >= 30
    assert ':tensorflow:serving:request_latency_bucket{model_name="seq",API="Predict",entrypoint="GRPC",le="10"}' \
        in text


def test_errors_get_tf_servings_status_codes_and_the_server_lives_on(server):
    import urllib.error
    import urllib.request

    import numpy as np

    from tfrec.serving import ServingClientError

    client = server["client"]
    cases = [(("nope", {"history": np.array([["i1"]], dtype=object)}), "NOT_FOUND"),
             (("seq", {"bogus": np.array(["x"], dtype=object)}), "INVALID_ARGUMENT"),
             (("seq", {"history": np.array([[1, 2]], np.int64)}), "INVALID_ARGUMENT"),
             (("seq", {"history": np.array(["flat"], dtype=object)}), "INVALID_ARGUMENT"),
             (("rank", {"user_id": np.array(["u1"], dtype=object)}), "INVALID_ARGUMENT")]
    for (model, inputs), code in cases:
        with pytest.raises(ServingClientError) as e:
            client.predict(model, inputs)
        assert e.value.code == code, e.value
    with pytest.raises(ServingClientError) as e:
        client.predict("seq", {"history": np.array([["i1"]], dtype=object)}, version=99)
    assert e.value.code == "NOT_FOUND"
    with pytest.raises(ServingClientError) as e:
        from tensorflow_serving.apis import inference_pb2

        client._call(client.predictions.MultiInference, inference_pb2.MultiInferenceRequest())
    assert e.value.code == "UNIMPLEMENTED"
    # TF Serving's answers: an unknown name (URL-decoded) is 404, a path its regex does not take 400
    for path, body, status in [("/v1/models/seq:predict", b"not json", 400), ("/v1/models/seq/versions/9", None, 404),
                               ("/v1/models/seq:predict", b'{"instances": []}', 400), ("/nowhere", None, 404),
                               ("/v1/models/bad name", None, 404), ("/v1/models/seq/versions/x", None, 400),
                               ("/v1/models/seq/labels/nope:predict", b'{"instances": [["i1"]]}', 400),
                               ("/v1/models/seq:predict", b'{"signature_name": "nope", "instances": [["i1"]]}', 400)]:
        request = urllib.request.Request(server["rest"] + path.replace(" ", "%20"), data=body,
                                         method="POST" if body else "GET")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(request, timeout=10)
        assert e.value.code == status and "error" in json.loads(e.value.read())
    assert server["proc"].poll() is None
    assert client.recommend("seq", [["i1"]], k=1)  # still answering


def test_new_versions_load_broken_ones_are_reported_and_labels_resolve(server):
    client, root = server["client"], server["root"]
    shutil.copytree(root / "seq" / "1", root / "seq" / "2")
    deadline = time.time() + 60
    while time.time() < deadline and {(s["version"], s["state"]) for s in client.status("seq")} != \
            {(1, "AVAILABLE"), (2, "AVAILABLE")}:
        time.sleep(0.3)
    assert {(s["version"], s["state"]) for s in client.status("seq")} == {(1, "AVAILABLE"), (2, "AVAILABLE")}
    import numpy as np
    from tensorflow_serving.apis import predict_pb2

    from tfrec.serving import tensors

    # the label names version 1 while both are loaded
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.version_label = "seq", "stable"
    tensors.to_proto(np.array([["i1"]], dtype=object), request.inputs["history"])
    assert client.predictions.Predict(request, timeout=10).model_spec.version.value == 1
    request.model_spec.ClearField("version_label")
    assert client.predictions.Predict(request, timeout=10).model_spec.version.value == 2
    os.makedirs(root / "seq" / "3")
    (root / "seq" / "3" / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    while time.time() < deadline and (3, "END") not in {(s["version"], s["state"]) for s in client.status("seq")}:
        time.sleep(0.3)
    broken = [s for s in client.status("seq") if s["version"] == 3][0]
    assert broken["state"] == "END" and broken["error"]
    assert server["real"] or "failed to load version 3" in broken["error"]
    assert client.recommend("seq", [["i1"]], k=2)  # version 2 keeps serving


def test_query_prints_recommendations_and_sigterm_drains_then_exits(server):
    r = run_cli("query", "--server", server["grpc"], "--model", "seq", "--history", "i1,i2", "-k", "3")
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[:3] == ["rank", "item", "score"] and len(lines) == 2 + 3  # header, rule, 3 rows
    explained, diverse, missing, both, malformed, extra = run_cli_batch(
        ("query", "--server", server["grpc"], "--model", "seq", "--history", "i1,i2", "-k", "3", "--explain",
         "--data", server["data"]),
        ("query", "--server", server["grpc"], "--model", "seq", "--history", "i1,i2", "-k", "3", "--diversity", "0.5"),
        ("query", "--server", server["grpc"], "--model", "missing", "--history", "i1"),
        ("query", "--server", server["grpc"], "--model", "seq", "--history", "i1", "--explain", "--diversity", "1"),
        ("query", "--server", server["grpc"], "--model", "seq", "--history", "i1", "--user-features", "gender"),
        # a next-item export reads no user: features sent to it are an input its signature does not have
        ("query", "--server", server["grpc"], "--model", "seq", "--history", "i1", "--user-features", "age=30"))
    assert_clean_error(malformed, "column=value pairs")
    assert extra.returncode == 2 and "INVALID_ARGUMENT" in extra.stderr and "Traceback" not in extra.stderr
    assert explained.returncode == 0, explained.stderr[-2000:]
    rows = [ln for ln in explained.stdout.splitlines() if ln.strip()][2:]
    assert len(rows) == 3 and all("because you liked Item 1" in ln or "because you liked Item 2" in ln for ln in rows)
    assert diverse.returncode == 0 and len([ln for ln in diverse.stdout.splitlines() if ln.strip()]) == 5
    assert missing.returncode == 2 and "NOT_FOUND" in missing.stderr
    assert_clean_error(both, "leave out --diversity")
    proc = server["proc"]
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and (server["real"] or "stopped" in out)


def test_the_serving_modules_import_no_modelling_library():
    code = ("import sys, tfrec.serving.server, tfrec.serving.client, tfrec.serving.models; "
            "print(sorted(m for m in ('keras_nlp', 'tensorflow_recommenders', 'tfrec.models', 'tfrec.training') "
            "if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_a_version_swap_under_continuous_load_fails_no_request(trained, tmp_path):
    """Version 2 appears and version 1 goes while four clients keep asking: every request answered."""
    import threading

    from tfrec.serving import Client
    from tfrec.serving.models import ModelManager, single_model_config
    from tfrec.serving.server import Server

    _, runs, _ = trained
    r = run_cli("export", "--model", runs["next-item"], "--serving-root", str(tmp_path), "--name", "seq", "--top-k", "5")
    assert r.returncode == 0, r.stderr[-2000:]
    base = tmp_path / "seq"
    manager = ModelManager(single_model_config("seq", str(base)), poll_seconds=0.2, warmup=True)
    server = Server(manager, port=0, rest_api_port=-1)
    server.start()
    client = Client(f"127.0.0.1:{server.port}", timeout=10, retries=0)
    answered, failed, stop = [], [], threading.Event()

    def ask():
        while not stop.is_set():
            try:
                answered.append(client.predict("seq", {"history": [["i1", "i2"]]}))
            except Exception as e:  # counted: the assertion below names it
                failed.append(repr(e))

    def served():
        return {(s["version"], s["state"]) for s in client.status("seq")}

    threads = [threading.Thread(target=ask) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        time.sleep(0.5)
        shutil.copytree(base / "1", tmp_path / ".copy")
        os.replace(tmp_path / ".copy", base / "2")  # a push: the new version appears whole
        deadline = time.time() + 60
        while time.time() < deadline and (2, "AVAILABLE") not in served():
            time.sleep(0.1)
        shutil.rmtree(base / "1")
        while time.time() < deadline and {v for v, state in served() if state == "AVAILABLE"} != {2}:
            time.sleep(0.1)
        swapped = {v for v, state in served() if state == "AVAILABLE"} == {2}
        before = len(answered)
        time.sleep(0.5)
        after_swap = len(answered) - before
    finally:
        stop.set()
        for t in threads:
            t.join()
        client.close()
        server.stop(grace=2)
    assert swapped, "version 2 never replaced version 1"
    assert not failed, failed[:3]
    assert len(answered) > 50 and after_swap > 0


def test_serve_refuses_bad_flags_and_config_files_in_one_sentence(tmp_path):
    from tests.integration.test_cli import assert_clean_error

    bad_batching, bad_ssl = tmp_path / "batching.txt", tmp_path / "ssl.config"
    bad_batching.write_text("max_batch_size: 3")  # TF Serving's proto wraps it: max_batch_size { value: 3 }
    bad_ssl.write_text('server_key: "key.pem" server_cert: "cert.pem"')  # file names, not PEM text
    base = ["serve", "--model_name", "m", "--model_base_path", str(tmp_path), "--file_system_poll_wait_seconds", "0"]
    cases = [(["--tensorflow_intra_op_parallelism", "-1"], "tensorflow_intra_op_parallelism"),
             (["--port", "0"], "--grpc_socket_path"),
             (["--batching_parameters_file", str(bad_batching)], "without --enable_batching"),
             (["--enable_batching", "--batching_parameters_file", str(bad_batching)], "not a BatchingParameters"),
             (["--ssl_config_file", str(bad_ssl)], "not PEM text"),
             (["--rest_api_port", "8500"], "must differ from --port"),
             (["--enable_batching=maybe"], "expected true or false"),
             (["--model_base_path_roots", str(tmp_path / "elsewhere")], "outside the allowed roots")]
    for (extra, words), r in zip(cases, run_cli_batch(*([*base, *extra] for extra, _ in cases))):
        assert_clean_error(r, words)
