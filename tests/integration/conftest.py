"""Fixtures shared by the export and serving tests: small models trained once per session."""

import pytest

from tests.conftest import run_cli_batch
from tests.integration.test_training_cli import SMALL

TASK = ["--set", "tasks.batch_size=64", "--set", "tasks.mlp=[16]", "--learning-rate", "0.01", "--epochs", "1"]


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    from tfrec.data.dataset import prepare
    from tfrec.data.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("export")
    data = str(root / "data")
    prepare(generate_synthetic(num_users=120, num_items=40, seed=11), data)
    runs = {"next-item": str(root / "next"), "causal": str(root / "causal"),
            **{task: str(root / task) for task in ("retrieval", "ranking", "multitask")}}
    # One process trains them all (the CLI's own process starts are tested elsewhere).
    results = run_cli_batch(
        ("pretrain", "--data", data, "--out", root / "pre", "--epochs", "1", *SMALL),
        ("finetune", "--task", "next-item", "--data", data, "--pretrained", root / "pre", "--out", runs["next-item"],
         "--epochs", "1", *SMALL),
        ("finetune", "--task", "next-item", "--data", data, "--pretrained", root / "pre", "--out", runs["causal"],
         "--epochs", "1", "--set", "finetune.examples=causal", *SMALL),
        *(("finetune", "--task", task, "--data", data, "--from-scratch", "--split", "random", "--out", runs[task],
           *SMALL, *TASK, *(["--set", "tasks.user_params=false"] if task == "ranking" else []))
          for task in ("retrieval", "ranking", "multitask")))
    for r in results:
        assert r.returncode == 0, r.stderr[-2000:]
    return data, runs, root


