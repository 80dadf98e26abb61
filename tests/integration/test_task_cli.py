"""tfrec finetune --task retrieval|ranking|multitask|cold-start, in fresh processes, on small synthetic data."""

import json
import os

import pytest

from tests.conftest import run_cli, run_cli_batch
from tests.integration.test_cli import assert_clean_error
from tests.integration.test_training_cli import SMALL

pytestmark = pytest.mark.e2e

TASK = ["--set", "tasks.batch_size=64", "--set", "tasks.mlp=[16]", "--learning-rate", "0.01"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from tfrec.data.dataset import prepare
    from tfrec.data.synthetic import generate_synthetic

    out = tmp_path_factory.mktemp("tasks") / "data"
    prepare(generate_synthetic(num_users=150, num_items=50, seed=5), str(out))
    return str(out)


@pytest.fixture(scope="module")
def pretrained_random(data, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("pre_random") / "run")
    r = run_cli("pretrain", "--data", data, "--out", out, "--split", "random", "--epochs", "2",
                "--learning-rate", "0.01", *SMALL)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def finetune(data, out, task, *extra):
    return run_cli("finetune", "--task", task, "--data", data, "--out", out, "--epochs", "2", *SMALL, *TASK, *extra)


def test_retrieval_from_pretrained_beats_random_and_reports_test_figures(data, pretrained_random, tmp_path):
    out = str(tmp_path / "retrieval")
    r = finetune(data, out, "retrieval", "--split", "random", "--pretrained", pretrained_random)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.load(open(os.path.join(out, "metrics.json")))
    test, base = summary["test"]["retrieval"], summary["baselines"]
    assert summary["monitor"] == "val_factorized_top_k/top_50_categorical_accuracy"  # 50 items: k <= 50
    assert test["rows"] == base["popularity"]["rows"] > 0
    # 50 items: the planted clusters make the model rank the chosen item well above chance
    assert test["top_10_accuracy"] > 2 * base["random"]["top_10_accuracy"]
    assert "| retrieval model |" in r.stdout and "| retrieval popularity |" in r.stdout
    state = json.load(open(os.path.join(out, "validation.json")))
    assert set(state["epochs"]) == {"1", "2"}
    assert "val_factorized_top_k/top_10_categorical_accuracy" in state["epochs"]["1"]
    assert json.load(open(os.path.join(out, "model", "config.json")))["task"] == "retrieval"


def test_ranking_and_multitask_report_rating_errors_below_the_mean_baseline(data, pretrained_random, tmp_path):
    binary = str(tmp_path / "binary")
    results = run_cli_batch(
        *(("finetune", "--task", task, "--data", data, "--out", str(tmp_path / task), "--epochs", "2", *SMALL, *TASK,
           "--split", "random", "--pretrained", pretrained_random) for task in ("ranking", "multitask")),
        ("finetune", "--task", "ranking", "--data", data, "--out", binary, "--epochs", "2", *SMALL, *TASK,
         "--split", "random", "--from-scratch", "--set", "tasks.objective=binary"),
        # label-scarce, parameter-efficient: half the rated rows, adapters on the frozen pretrained encoder
        ("finetune", "--task", "ranking", "--data", data, "--out", str(tmp_path / "scarce"), "--epochs", "2", *SMALL,
         *TASK, "--split", "random", "--pretrained", pretrained_random, "--set", "finetune.fraction=0.5",
         "--set", "finetune.trainable=adapters"))
    for r in results:
        assert r.returncode == 0, r.stderr[-2000:]
    scarce = json.load(open(os.path.join(tmp_path / "scarce", "metrics.json")))
    whole = json.load(open(os.path.join(tmp_path / "ranking", "metrics.json")))
    assert scarce["train_rows"] == -(-whole["train_rows"] // 2) and scarce["parameters"] < whole["parameters"]
    assert 0 < scarce["test"]["ranking"]["rmse"] < 2 * scarce["baselines"]["train_mean"]["rmse"]
    for task in ("ranking", "multitask"):
        summary = json.load(open(os.path.join(tmp_path / task, "metrics.json")))
        ranking = summary["test"]["ranking"]
        # ratings are planted (about 4 inside the user's cluster, 2.5 outside): the model must beat the mean
        assert ranking["rmse"] < summary["baselines"]["train_mean"]["rmse"]
        assert set(ranking) >= {"rmse", "mae", "r2"}
        if task == "multitask":
            assert "retrieval" in summary["test"] and summary["monitor"] == "val_loss"
    summary = json.load(open(os.path.join(binary, "metrics.json")))
    assert summary["monitor"] == "val_auc" and summary["test"]["ranking"]["auc"] > 0.6


def test_private_ranking_reports_its_budget_and_retrieval_is_refused(data, tmp_path):
    """DP-SGD for the rating task: users Poisson-sampled, each example's gradient clipped; the run records the
    epsilon dp-accounting gives, and still learns the planted ratings. In-batch softmax tasks are refused."""
    ranked, refused = run_cli_batch(
        ("finetune", "--task", "ranking", "--data", data, "--out", str(tmp_path / "private"), "--epochs", "3",
         "--split", "random", "--from-scratch", *SMALL, *TASK, "--set", "privacy.noise_multiplier=0.8",
         "--set", "privacy.stages=[finetune]", "--set", "tasks.batch_size=30"),
        ("finetune", "--task", "retrieval", "--data", data, "--out", str(tmp_path / "x"), "--epochs", "1",
         "--split", "random", "--from-scratch", *SMALL, *TASK, "--set", "privacy.noise_multiplier=1"))
    assert ranked.returncode == 0, ranked.stderr[-2000:]
    summary = json.load(open(os.path.join(tmp_path / "private", "run.json")))["summary"]
    spent = summary["privacy"]
    # 150 users sampled at 30 / 150 per step: 5 steps an epoch, 3 epochs; delta 1 / users
    assert spent["unit"] == "user" and spent["units"] == 150 and spent["sample_rate"] == 0.2 and spent["steps"] == 15
    from tfrec.training.privacy import epsilon

    assert spent["epsilon"] == epsilon(0.8, 0.2, 15, 1 / 150) and "privacy: (epsilon" in ranked.stdout
    assert "val_rmse" in summary["valid"] and summary["test"]["ranking"]["rows"] > 0
    assert summary["test"]["ranking"]["rmse"] < 2 * summary["baselines"]["train_mean"]["rmse"]
    assert_clean_error(refused, "in-batch softmax")
    assert not os.path.exists(tmp_path / "x")


def test_cold_start_ranks_unseen_items_above_random(data, tmp_path):
    out = str(tmp_path / "cold")
    r = finetune(data, out, "cold-start", "--split", "cold", "--from-scratch", "--set", "tasks.cold_fraction=0.2")
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.load(open(os.path.join(out, "metrics.json")))
    test, base = summary["test"]["retrieval"], summary["baselines"]
    # 10 cold items: random puts the target in the top 5 half the time; item categories follow the clusters
    assert base["random"]["rows"] == test["rows"] > 0
    assert test["ndcg@10"] > base["random"]["ndcg@10"]


def test_task_bad_inputs_are_one_sentence(data, pretrained_random, tmp_path):
    from tfrec.data.dataset import prepare
    from tfrec.data.synthetic import generate_synthetic

    # a dataset of other items (another vocabulary), one without ratings, one without item features
    other, implicit, bare = (str(tmp_path / name) for name in ("other", "implicit", "bare"))
    prepare(generate_synthetic(num_users=80, num_items=30, seed=9), other)
    raw = generate_synthetic(num_users=80, num_items=30, seed=9)
    raw.interactions = raw.interactions.drop(columns=["rating"])
    prepare(raw, implicit)
    raw = generate_synthetic(num_users=80, num_items=30, seed=9)
    raw.items = None
    prepare(raw, bare)
    cases = [
        ((data, "cold-start", "--split", "random", "--from-scratch"), "cold-start task trains and tests on the cold split"),
        ((data, "retrieval", "--split", "cold", "--from-scratch"), "use it with --task cold-start"),
        ((data, "retrieval", "--split", "loo", "--pretrained", pretrained_random), "whose test rows it may have seen"),
        ((data, "ranking-ish", "--split", "random", "--from-scratch"), "unknown task 'ranking-ish'"),
        ((data, "ranking", "--split", "random", "--from-scratch", "--set", "tasks.objective=stars"),
         "unknown tasks.objective 'stars'"),
        ((other, "retrieval", "--split", "random", "--pretrained", pretrained_random), "vocabulary_size"),
        ((implicit, "ranking", "--split", "random", "--from-scratch"), "needs ratings"),  # nothing to learn
        ((bare, "cold-start", "--split", "cold", "--from-scratch"), "needs item content features"),
    ]
    bad = str(tmp_path / "bad")
    argvs = [("finetune", "--task", task, "--data", folder, "--out", bad, "--epochs", "2", *SMALL, *TASK, *extra)
             for (folder, task, *extra), _ in cases]
    for (_, message), r in zip(cases, run_cli_batch(*argvs)):
        assert_clean_error(r, message)
    assert not os.path.exists(bad)


def test_evaluate_scores_a_leave_one_out_retrieval_model_and_points_other_task_models_to_their_metrics(
        data, tmp_path):
    import numpy as np

    rank, random_split, loo = (str(tmp_path / n) for n in ("rank", "random", "loo"))
    trained = run_cli_batch(
        ("finetune", "--task", "ranking", "--data", data, "--out", rank, "--split", "random", "--from-scratch",
         "--epochs", "1", *SMALL, *TASK),
        ("finetune", "--task", "retrieval", "--data", data, "--out", random_split, "--split", "random",
         "--from-scratch", "--epochs", "1", *SMALL, *TASK),
        ("finetune", "--task", "retrieval", "--data", data, "--out", loo, "--split", "loo", "--from-scratch",
         "--epochs", "2", *SMALL, *TASK))
    for r in trained:
        assert r.returncode == 0, r.stderr[-2000:]
    ranking, random_retrieval, full, empty = run_cli_batch(
        ("evaluate", "--model", rank, "--data", data),
        ("evaluate", "--model", random_split, "--data", data),
        ("evaluate", "--model", loo, "--data", data, "--split", "test", "--out", str(tmp_path / "full")),
        ("evaluate", "--model", loo, "--data", data, "--split", "test", "--history-length", "0",
         "--per-user", "--out", str(tmp_path / "empty")))
    assert_clean_error(ranking, "ranking model", "metrics.json")
    assert_clean_error(random_retrieval, "retrieval model trained on the random split", "metrics.json")
    assert full.returncode == 0 and empty.returncode == 0, full.stderr[-2000:] + empty.stderr[-2000:]
    # the same protocol as the run's own test read (leave-one-out, every item, history excluded): the same figures
    own = json.load(open(os.path.join(loo, "run.json")))["summary"]["test"]["retrieval"]
    report = json.load(open(str(tmp_path / "full") + ".json"))
    for metric in ("hr@10", "ndcg@10", "mrr"):
        assert report["metrics"][metric] == pytest.approx(own[metric], abs=1e-6), metric
    # with no history the query is the user's features alone: users of different features get different lists
    import csv

    rows = csv.DictReader(open(str(tmp_path / "empty") + ".per_user.csv"))
    ranks = {row["user_id"]: int(row["rank"]) for row in rows}
    from tfrec.data.dataset import PreparedDataset
    from tfrec.models import persistence

    ds = PreparedDataset(data)
    model, _ = persistence.load(os.path.join(loo, "model"))
    assert model.query_tower.uses_user
    users = np.array([ds.user_vocab.index(u) for u in list(ranks)[:40]], np.int32)
    from tfrec.contract import ITEM_INDICES, USER_INDEX

    query = model.query_vectors({ITEM_INDICES: np.ones((len(users), 1), np.int32), USER_INDEX: users})
    assert len({tuple(np.round(q, 5)) for q in query}) > 1
    assert len(set(ranks.values())) > 1
