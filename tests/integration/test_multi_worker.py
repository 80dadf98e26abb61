"""Multi-worker training: two worker processes on loopback, MultiWorkerMirroredStrategy from TF_CONFIG."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, run_cli_batch
from tests.integration.test_cli import assert_clean_error
from tests.integration.test_training_cli import SMALL

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(args: list[str], workdir: str) -> list[subprocess.Popen]:
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
                   CUDA_VISIBLE_DEVICES="")
        log = open(os.path.join(workdir, f"worker{index}.log"), "w")
        procs.append(subprocess.Popen([sys.executable, "-m", "tfrec", *args], cwd=REPO, env=env, stdout=log,
                                      stderr=subprocess.STDOUT, text=True))
    return procs


def wait(procs, timeout: float = 400) -> list[int]:
    deadline = time.time() + timeout
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(1, deadline - time.time())))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("a worker hung")
    return codes


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A dataset prepared by the Spark engine with its sequences in TFRecord shards, which the workers read
    (the pandas engine writes the same bytes: tests/integration/test_spark_engine.py)."""
    from tfrec.data import preprocess, spark_engine, spark_source
    from tfrec.data.dataset import PreparedDataset
    from tfrec.data.synthetic import generate_synthetic

    out = str(tmp_path_factory.mktemp("mw") / "data")
    with spark_source.session("local[2]", {"spark.sql.shuffle.partitions": "2"}) as spark:
        spark_engine.prepare(spark, generate_synthetic(num_users=200, num_items=60, seed=3), out,
                             preprocess.PrepareConfig(format="tfrecord", shards=2))
    assert len(PreparedDataset(out).sequence_shards) == 2 and os.path.isdir(os.path.join(out, "interactions.parquet"))
    return out


def test_two_workers_train_in_step_and_only_the_chief_writes(prepared, tmp_path):
    out = str(tmp_path / "run")
    args = ["pretrain", "--data", prepared, "--out", out, "--epochs", "3", "--learning-rate", "0.01",
            "--strategy", "multi-worker", "--set", "pretrain.steps_per_epoch=6", *SMALL]
    codes = wait(start_workers(args, str(tmp_path)))
    logs = [open(tmp_path / f"worker{i}.log").read() for i in range(2)]
    assert codes == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    # identical weights on both workers, and the chief recorded the same fingerprint
    prints = [next(line for line in log.splitlines() if "weights sha256" in line).split()[-1] for log in logs]
    assert prints[0] == prints[1]
    summary = json.load(open(os.path.join(out, "run.json")))["summary"]
    assert summary["weights_sha256"] == prints[0] and summary["worker"] == "worker:0"
    # each worker read only its own shard, and the validation figures are pooled over both workers' users
    for index, log in enumerate(logs):
        line = next(line for line in log.splitlines() if line.startswith(f"worker {index} of 2: read"))
        assert line.endswith(f"loo-{index:05d}-of-00002.tfrecord"), line
    reads = [int(next(line for line in log.splitlines() if " of 2: read " in line).split()[5]) for log in logs]
    assert sum(reads) == 200 and min(reads) > 0  # the synthetic set's 200 users, dealt over the two shards
    state = json.load(open(os.path.join(out, "validation.json")))
    assert state["users"] == 200
    figures = [[line.split("(")[0] for line in log.splitlines() if line.startswith("epoch ")] for log in logs]
    assert figures[0] == figures[1] and len(figures[0]) == 3  # the same pooled figure on both workers
    # the loss falls
    epochs = state["epochs"]
    assert epochs["3"]["loss"] < epochs["1"]["loss"]
    # only the chief wrote: one model, the chief's checkpoints, no worker scratch left in the run folder
    assert {"model", "checkpoints", "logs", "validation.json", "metrics.json", "run.json"} <= set(os.listdir(out))
    assert not [p for p, dirs, _ in os.walk(out) for d in dirs if "workertemp" in d]
    assert len([f for f in os.listdir(os.path.join(out, "checkpoints")) if f.endswith(".index")]) == 3

    # next-item fine-tuning from it, on the same two workers
    ft = str(tmp_path / "ft")
    codes = wait(start_workers(["finetune", "--data", prepared, "--pretrained", out, "--out", ft, "--epochs", "2",
                                "--strategy", "multi-worker", "--set", "finetune.steps_per_epoch=6", *SMALL],
                               str(tmp_path)))
    logs = [open(tmp_path / f"worker{i}.log").read() for i in range(2)]
    assert codes == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    prints = [next(line for line in log.splitlines() if "weights sha256" in line).split()[-1] for log in logs]
    assert prints[0] == prints[1] == json.load(open(os.path.join(ft, "run.json")))["summary"]["weights_sha256"]

    # a TFRS task (two-tower retrieval) from the same backbone: in step, the chief alone writes and tests
    rt = str(tmp_path / "retrieval")
    codes = wait(start_workers(["finetune", "--task", "retrieval", "--data", prepared, "--pretrained", out, "--out",
                                rt, "--epochs", "2", "--strategy", "multi-worker", "--set",
                                "tasks.steps_per_epoch=6", *SMALL], str(tmp_path)))
    logs = [open(tmp_path / f"worker{i}.log").read() for i in range(2)]
    assert codes == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    prints = [next(line for line in log.splitlines() if "weights sha256" in line).split()[-1] for log in logs]
    summary = json.load(open(os.path.join(rt, "run.json")))["summary"]
    assert prints[0] == prints[1] == summary["weights_sha256"] and summary["worker"] == "worker:0"
    assert summary["test"]["retrieval"]["rows"] > 0 and "popularity" in summary["baselines"]
    assert "HR@10" in logs[0] and "HR@10" not in logs[1]  # the test table: the chief's alone
    epochs = json.load(open(os.path.join(rt, "validation.json")))["epochs"]
    assert epochs["2"]["loss"] < epochs["1"]["loss"]
    assert len([f for f in os.listdir(os.path.join(rt, "checkpoints")) if f.endswith(".index")]) == 2
    assert not [p for p, dirs, _ in os.walk(rt) for d in dirs if "workertemp" in d]


def test_a_killed_job_started_again_resumes(prepared, tmp_path):
    out = str(tmp_path / "run")
    args = ["pretrain", "--data", prepared, "--out", out, "--epochs", "4", "--learning-rate", "0.01",
            "--strategy", "multi-worker", "--set", "pretrain.steps_per_epoch=20", "--set", "backup_every_steps=4",
            *SMALL]
    procs = start_workers(args, str(tmp_path))
    state = os.path.join(out, "validation.json")
    deadline = time.time() + 300
    while time.time() < deadline and not os.path.exists(state) and all(p.poll() is None for p in procs):
        time.sleep(0.2)
    time.sleep(1.0)
    for p in procs:
        p.kill()
        p.wait()
    assert os.path.exists(state), open(tmp_path / "worker0.log").read()[-3000:]
    assert "4" not in json.load(open(state))["epochs"]
    codes = wait(start_workers(args, str(tmp_path)))
    logs = [open(tmp_path / f"worker{i}.log").read() for i in range(2)]
    assert codes == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert all("Epoch 1/4" not in log for log in logs)  # continued, not restarted
    assert set(json.load(open(state))["epochs"]) == {"1", "2", "3", "4"}
    assert json.load(open(os.path.join(out, "run.json")))["status"] == "done"


def test_multi_worker_needs_a_cluster(prepared, tmp_path):
    argv = ("pretrain", "--data", prepared, "--out", str(tmp_path / "o"), "--strategy", "multi-worker")
    cases = [("", "TF_CONFIG"), ("{not json", "not valid JSON"),
             (json.dumps({"cluster": {"ps": ["a:1"]}, "task": {"type": "ps"}}), "parameter servers")]
    results = run_cli_batch(*(argv for _ in cases), envs=[{"TF_CONFIG": config} for config, _ in cases])
    for (_, message), r in zip(cases, results):
        assert_clean_error(r, message)
    assert not os.path.exists(tmp_path / "o")
