"""Shared fixtures.  Datasets are found through TFREC_DATA_DIR (default ../shared/data)."""

from __future__ import annotations

import os
import sys

import pytest

import tfrec  # noqa: F401  (pins Keras 2 before anything imports TensorFlow)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.environ.get("TFREC_DATA_DIR") or os.path.join(os.path.dirname(REPO), "shared", "data")


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


def run_cli(*args: str, env: dict | None = None, timeout: float = 300):
    """Runs `python -m tfrec ARGS` in a fresh process; returns the CompletedProcess."""
    import subprocess

    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "tfrec", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=REPO)


def pytest_sessionfinish(session, exitstatus):
    # Never let an empty run pass: no test collected, or every test deselected.
    if exitstatus == 0 and session.testscollected == 0:
        session.exitstatus = pytest.ExitCode.NO_TESTS_COLLECTED
