"""Shared fixtures.  Datasets are found through TFREC_DATA_DIR (default ../shared/data)."""

from __future__ import annotations

import os
import sys

import pytest

import tfrec  # noqa: F401  (pins Keras 2 before anything imports TensorFlow)
from tfrec import allocator

# The CLI's malloc padding (tfrec/allocator.py) for this process and, through the environment, for the
# notebook kernels and other Python processes the tests start.
allocator.keep_freed_memory()
for _key, _value in allocator.environment().items():
    os.environ.setdefault(_key, _value)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.environ.get("TFREC_DATA_DIR") or os.path.join(os.path.dirname(REPO), "shared", "data")


# The tiny MovieLens-100K runs of the quickstart and notebook tests, as dotted-key overrides of a run
# config: the encoder a third of the default width, one layer, shorter histories ...
TINY_ENCODER = {"model.hidden_dim": 32, "model.intermediate_dim": 64, "model.num_layers": 1, "model.max_len": 30}
# ... with 3 pretraining epochs and 400 fine-tuning steps.  Even this beats popularity on the test split.
TINY_MOVIELENS = {**TINY_ENCODER, "pretrain.epochs": 3, "pretrain.validate_every": 3, "pretrain.learning_rate": 0.005,
                  "finetune.epochs": 1, "finetune.steps_per_epoch": 400, "finetune.learning_rate": 0.003}


def dataset_dir(folder: str) -> str:
    """The local copy of a dataset; skips the test, with the reason, when it is absent."""
    path = os.path.join(DATA_DIR, folder)
    if not os.path.isdir(path):
        pytest.skip(f"dataset folder {path} is absent (set TFREC_DATA_DIR to the folder holding {folder}/)")
    return path


@pytest.fixture
def ml100k_dir() -> str:
    return dataset_dir("ml-100k")


@pytest.fixture
def beauty_dir() -> str:
    return dataset_dir("amazon-beauty")


@pytest.fixture
def ml_latest_dir() -> str:
    return dataset_dir("ml-latest-small")


@pytest.fixture(scope="session")
def synthetic_raw():
    from tfrec.data.synthetic import generate_synthetic

    return generate_synthetic(num_users=300, num_items=120, seed=7)


@pytest.fixture(scope="session")
def synthetic_prepared(synthetic_raw, tmp_path_factory):
    from tfrec.data.dataset import prepare

    return prepare(synthetic_raw, str(tmp_path_factory.mktemp("synthetic") / "prepared"))


@pytest.fixture(scope="session")
def s3_uri():
    """``s3_uri("path")``: a URI on an S3 server running in this process (moto's), bucket made, credentials
    and endpoint in the URI, so that Spark's executors reach it too."""
    server_module = pytest.importorskip("moto.server", reason="the S3 tests need moto (pip install moto[s3] flask "
                                                               "flask-cors)")
    import pyarrow.fs as pafs

    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request in failure reports
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()

    def uri(path: str) -> str:
        return f"s3://tfrec:secret@tfrec-test/{path}?endpoint_override={host}:{port}&scheme=http&region=us-east-1"

    fs, _ = pafs.FileSystem.from_uri(uri("") + "&allow_bucket_creation=true")
    fs.create_dir("tfrec-test")
    yield uri
    server.stop()


def run_cli(*args: str, env: dict | None = None, timeout: float = 300):
    """Runs `python -m tfrec ARGS` in a fresh process; returns the CompletedProcess."""
    import subprocess

    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "tfrec", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=REPO)


_BATCH_DRIVER = """
import contextlib, io, json, os, sys, traceback
from tfrec.cli import main
results = []
for argv, env in json.load(open(sys.argv[1])):
    saved = dict(os.environ)
    os.environ.update(env)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
    os.environ.clear()
    os.environ.update(saved)
    results.append({"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
json.dump(results, open(sys.argv[2], "w"))
"""


def run_cli_batch(*argvs, envs: list | None = None, timeout: float = 600) -> list:
    """Runs several `tfrec` commands one after another in one fresh process, through `tfrec.cli.main`.

    For commands whose own process start is not what a test checks (bad-input cases, the runs a
    fixture only builds on): one process start, and one TensorFlow import, serves them all.  Each result has `returncode`, `stdout` and `stderr`, as from
    :func:`run_cli`; an exception escaping `main` shows up as its traceback in `stderr`, as it would
    in a process of its own.  `envs`, one dict per command, sets environment variables for that
    command alone.
    """
    import json
    import subprocess
    import tempfile
    from types import SimpleNamespace

    with tempfile.TemporaryDirectory() as tmp:
        cases, results = os.path.join(tmp, "cases.json"), os.path.join(tmp, "results.json")
        with open(cases, "w") as f:
            json.dump([[list(map(str, argv)), env] for argv, env in zip(argvs, envs or [{}] * len(argvs))], f)
        r = subprocess.run([sys.executable, "-c", _BATCH_DRIVER, cases, results], capture_output=True, text=True,
                           timeout=timeout, cwd=REPO)
        assert r.returncode == 0 and os.path.exists(results), r.stderr[-3000:]
        with open(results) as f:
            return [SimpleNamespace(**x) for x in json.load(f)]


def pytest_sessionfinish(session, exitstatus):
    # Never let an empty run pass: no test collected, or every test deselected.
    if exitstatus == 0 and session.testscollected == 0:
        session.exitstatus = pytest.ExitCode.NO_TESTS_COLLECTED
