"""Fixtures shared by the export and serving tests: small models trained once per session."""

import pytest

from tests.conftest import run_cli
from tests.integration.test_training_cli import SMALL

TASK = ["--set", "tasks.batch_size=64", "--set", "tasks.mlp=[16]", "--learning-rate", "0.01", "--epochs", "1"]


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    from tfrec.data.dataset import prepare
    from tfrec.data.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("export")
    data = str(root / "data")
    prepare(generate_synthetic(num_users=120, num_items=40, seed=11), data)
    runs = {}
    r = run_cli("pretrain", "--data", data, "--out", str(root / "pre"), "--epochs", "1", *SMALL)
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_cli("finetune", "--task", "next-item", "--data", data, "--pretrained", str(root / "pre"),
                "--out", str(root / "next"), "--epochs", "1", *SMALL)
    assert r.returncode == 0, r.stderr[-2000:]
    runs["next-item"] = str(root / "next")
    for task in ("retrieval", "ranking", "multitask"):
        r = run_cli("finetune", "--task", task, "--data", data, "--from-scratch", "--split", "random",
                    "--out", str(root / task), *SMALL, *TASK)
        assert r.returncode == 0, r.stderr[-2000:]
        runs[task] = str(root / task)
    return data, runs, root


