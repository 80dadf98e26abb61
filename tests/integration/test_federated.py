"""tfrec finetune --federated: Flower's simulation of clients holding their own users, FedAvg on the server."""

import json
import os

import numpy as np
import pytest

from tests.conftest import run_cli, run_cli_batch
from tests.integration.test_cli import assert_clean_error
from tests.integration.test_training_cli import SMALL

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FED = ["--set", "federated.clients=3", "--set", "federated.rounds=2", "--set", "finetune.batch_size=32",
       "--learning-rate", "0.01"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from tfrec.data.dataset import prepare
    from tfrec.data.synthetic import generate_synthetic

    out = tmp_path_factory.mktemp("federated") / "data"
    prepare(generate_synthetic(num_users=90, num_items=30, seed=3), str(out))
    return str(out)


def test_partition_deals_every_user_to_one_client():
    from tfrec.training.federated import partition

    parts = partition(10, 3, seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(10)) and [len(p) for p in parts] == [4, 3, 3]
    assert [p.tolist() for p in parts] == [p.tolist() for p in partition(10, 3, seed=0)]  # seeded
    assert [p.tolist() for p in parts] != [p.tolist() for p in partition(10, 3, seed=1)]


def test_federated_finetuning_validates_every_round_saves_the_best_and_reports_its_traffic(data, tmp_path):
    out, private = str(tmp_path / "fed"), str(tmp_path / "private")
    r = run_cli("finetune", "--federated", "--from-scratch", "--data", data, "--out", out, *SMALL, *FED, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.load(open(os.path.join(out, "run.json")))["summary"]
    fed = summary["federated"]
    assert fed["clients"] == 3 and fed["rounds"] == 2 and fed["clients_per_round"] == 3
    rounds = json.load(open(os.path.join(out, "validation.json")))["rounds"]
    assert [x["round"] for x in rounds] == [0, 1, 2]  # the starting weights, then every round
    best = max(rounds, key=lambda x: x["val_ndcg@10"])
    assert summary["best_epoch"] == best["round"] and summary["valid"]["ndcg@10"] == pytest.approx(best["val_ndcg@10"])
    # the bytes: every weight sent to each client and back, each round
    from tfrec.models import persistence

    model, _ = persistence.load(os.path.join(out, "model"))
    size = sum(w.nbytes for w in model.get_weights())
    assert fed["model_bytes"] == size and fed["bytes_per_round"] == 2 * 3 * size
    assert "privacy" not in summary and "federated: 3 clients, 2 rounds" in r.stdout
    # the saved model is the best round's: evaluating it gives that round's validation figure
    evaluated, noisy, bad = run_cli_batch(
        ("evaluate", "--model", out, "--data", data, "--out", str(tmp_path / "eval")),
        ("finetune", "--federated", "--from-scratch", "--data", data, "--out", private, *SMALL, *FED,
         "--set", "federated.noise_multiplier=1.0", "--set", "federated.clip_norm=0.5",
         "--set", "federated.fraction=0.67"),
        ("finetune", "--federated", "--from-scratch", "--data", data, "--out", str(tmp_path / "bad"), *SMALL,
         "--set", "federated.clients=500"), timeout=900)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    report = json.load(open(str(tmp_path / "eval") + ".json"))
    assert report["metrics"]["ndcg@10"] == pytest.approx(best["val_ndcg@10"], abs=1e-6)
    assert noisy.returncode == 0, noisy.stderr[-3000:]
    budget = json.load(open(os.path.join(private, "run.json")))["summary"]["privacy"]
    from tfrec.training import privacy

    assert budget["unit"] == "client" and budget["sample_rate"] == pytest.approx(2 / 3)
    assert budget["epsilon"] == pytest.approx(privacy.epsilon(1.0, 2 / 3, 2, 1 / 3))
    assert_clean_error(bad, "federated.clients is 500", "90 training users")
    assert not os.path.exists(str(tmp_path / "bad"))


def test_federated_settings_are_checked_before_anything_runs(data, tmp_path):
    cases = [
        (("--set", "federated.clients=1"), "at least 2 clients"),
        (("--set", "federated.noise_multiplier=1"), "needs a positive federated.clip_norm"),
        (("--task", "retrieval"), "--federated fine-tunes the next-item task"),
        (("--set", "finetune.examples=causal"), "trains on all-prefixes examples"),
    ]
    results = run_cli_batch(*(("finetune", "--federated", "--from-scratch", "--data", data, "--out",
                               str(tmp_path / f"c{i}"), *SMALL, *extra) for i, (extra, _) in enumerate(cases)))
    for r, (_, message) in zip(results, cases):
        assert_clean_error(r, message)
