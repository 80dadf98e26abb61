"""pretrain / finetune / evaluate through the CLI, in fresh processes, on a small synthetic dataset."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, run_cli, run_cli_batch
from tests.integration.test_cli import assert_clean_error

pytestmark = pytest.mark.e2e

SMALL = ["--set", "model.hidden_dim=16", "--set", "model.intermediate_dim=32", "--set", "model.num_layers=1",
         "--set", "model.max_len=12", "--set", "pretrain.validate_every=1", "--verbose", "2"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from tfrec.data.dataset import prepare
    from tfrec.data.synthetic import generate_synthetic

    out = tmp_path_factory.mktemp("train") / "data"
    prepare(generate_synthetic(num_users=200, num_items=60, seed=3), str(out))
    return str(out)


@pytest.fixture(scope="module")
def pretrained(prepared, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("pre") / "run")
    r = run_cli("pretrain", "--data", prepared, "--out", out, "--epochs", "3", "--learning-rate", "0.01", *SMALL)
    assert r.returncode == 0, r.stderr[-2000:]
    return out, r


def test_pretrain_writes_a_complete_run(prepared, pretrained):
    out, r = pretrained
    run = json.load(open(os.path.join(out, "run.json")))
    assert run["status"] == "done" and run["summary"]["epochs_run"] == 3
    assert {"model", "checkpoints", "logs", "validation.json", "metrics.json"} <= set(os.listdir(out))
    assert not os.path.exists(os.path.join(out, "backup"))
    assert any(f.startswith("events.out.tfevents") for _, _, fs in os.walk(os.path.join(out, "logs")) for f in fs)
    assert len([f for f in os.listdir(os.path.join(out, "checkpoints")) if f.endswith(".index")]) == 3
    state = json.load(open(os.path.join(out, "validation.json")))
    assert set(state["epochs"]) == {"1", "2", "3"} and "val_ndcg@10" in state["epochs"]["3"]
    assert "validation NDCG@10" in r.stdout and "| HR@1 |" in r.stdout
    # the printed validation table names how many users its figures average over (one target each)
    row = [ln for ln in r.stdout.splitlines() if ln.startswith(f"| {os.path.join(out, 'model')} |")]
    assert len(row) == 1 and row[0].rstrip(" |").split("|")[-1].strip() == str(run["summary"]["valid"]["users"])
    # the run records what it cost, measured by the process itself
    cost = run["resources"]
    assert 0 < cost["process_cpu_seconds"] and 0 < cost["wall_seconds"] and 100 < cost["process_peak_rss_mb"] < 20000
    # the same command again: finished, nothing retrained
    again = run_cli("pretrain", "--data", prepared, "--out", out, "--epochs", "3", "--learning-rate", "0.01", *SMALL)
    assert again.returncode == 0 and "finished pretraining run" in again.stdout


def test_finetune_from_pretrained_and_from_scratch_then_evaluate(prepared, pretrained, tmp_path):
    pre, _ = pretrained
    ft = str(tmp_path / "ft")
    r = run_cli("finetune", "--task", "next-item", "--data", prepared, "--pretrained", pre, "--out", ft,
                "--epochs", "2", "--learning-rate", "0.005", "--set", "finetune.lr_schedule=cosine", *SMALL)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.load(open(os.path.join(ft, "run.json")))["identity"]["pretrained"].endswith("model")
    # from scratch, with a learning rate of 0 validation never improves: patience 1 stops after epoch 2
    scratch = str(tmp_path / "scratch")
    r, evaluation, pop = run_cli_batch(
        ("finetune", "--data", prepared, "--from-scratch", "--out", scratch, "--epochs", "10", "--learning-rate", "0",
         "--set", "finetune.patience=1", *SMALL),
        ("evaluate", "--model", ft, "--data", prepared, "--split", "test", "--per-user"),
        ("evaluate", "--baseline", "popularity", "--data", prepared, "--out", str(tmp_path / "pop")))
    new_user, by_group, negative = run_cli_batch(
        ("evaluate", "--model", ft, "--data", prepared, "--history-length", "1", "--out", str(tmp_path / "one")),
        ("evaluate", "--baseline", "popularity-by-group", "--data", prepared, "--history-length", "0",
         "--out", str(tmp_path / "group")),
        ("evaluate", "--model", ft, "--data", prepared, "--history-length", "-1"))
    assert new_user.returncode == 0 and by_group.returncode == 0, new_user.stderr[-2000:] + by_group.stderr[-2000:]
    one = json.load(open(str(tmp_path / "one") + ".json"))
    assert one["history_length"] == 1 and "last 1 items" in one["protocol"]
    assert one["fairness"]["activity"]["groups"]  # activity groups come from the whole histories
    assert len(one["fairness"]["activity"]["groups"]) == 4
    group = json.load(open(str(tmp_path / "group") + ".json"))
    assert group["model"] == "popularity-by-group" and group["metrics"]["users"] == one["metrics"]["users"]
    assert_clean_error(negative, "0 or more")
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.load(open(os.path.join(scratch, "run.json")))["summary"]
    assert summary["stopped_early"] and summary["epochs_run"] == 2 and summary["best_epoch"] == 1
    assert json.load(open(os.path.join(scratch, "run.json")))["identity"]["pretrained"] is None
    assert evaluation.returncode == 0, evaluation.stderr[-2000:]
    report = json.load(open(os.path.join(ft, "eval_test.json")))
    assert report["split"] == "test" and report["metrics"]["users"] > 0
    assert set(report["metrics"]) >= {"hr@1", "hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr"}
    assert open(os.path.join(ft, "eval_test.md")).read().count("|") > 10
    beyond, fairness = report["beyond_accuracy"], report["fairness"]
    assert 0 < beyond["coverage@10"] <= 1 and 0 <= beyond["gini@10"] < 1 and beyond["novelty"] > 0
    assert 0 <= beyond["diversity_embeddings"] <= 2 and beyond["attribute_columns"] == ["category", "tags"]
    assert 0 <= beyond["diversity_attributes"] <= 1  # multi-hot vectors: cosines from 0 to 1
    shares = beyond["popularity_groups"]
    assert sum(g["recommendation_share"] for g in shares.values()) == pytest.approx(1)
    assert sum(g["interaction_share"] for g in shares.values()) == pytest.approx(1)
    activity = fairness["activity"]["groups"]
    assert len(activity) == 4 and sum(g["users"] for g in activity.values()) == report["metrics"]["users"]
    assert set(fairness) == {"activity", "age band", "segment"}  # its users have an age and a segment
    assert "coverage@10" in evaluation.stdout and "largest gap" in open(os.path.join(ft, "eval_test.md")).read()
    lines = open(os.path.join(ft, "eval_test.per_user.csv")).read().splitlines()
    assert lines[0] == "user_id,target_item_id,rank" and len(lines) == report["metrics"]["users"] + 1
    assert pop.returncode == 0 and "popularity" in pop.stdout
    pop_report = json.load(open(str(tmp_path / "pop") + ".json"))["beyond_accuracy"]
    assert "diversity_embeddings" not in pop_report  # a baseline has no item vectors
    assert pop_report["average_popularity"] >= beyond["average_popularity"]  # it recommends the most popular


def test_label_scarce_finetuning_learns_from_a_share_of_users_and_reports_the_unseen(prepared, pretrained,
                                                                                    tmp_path):
    import numpy as np

    from tfrec.training.config import RunConfig
    from tfrec.training.trainer import SequenceData

    data = SequenceData.load(prepared)
    part = data.label_part(0.25, seed=0)
    assert len(part) == int(np.ceil(0.25 * len(data.train))) and data.label_part(1.0, 0) is data.train
    pre, _ = pretrained
    ft = str(tmp_path / "ft")
    # with low-rank adapters on a frozen backbone, exported as a plain model (the export checks its answers)
    r, evaluation, export = run_cli_batch(
        ("finetune", "--data", prepared, "--pretrained", pre, "--out", ft, "--epochs", "1",
         "--set", "finetune.fraction=0.25", "--set", "finetune.trainable=adapters", "--set", "finetune.adapter_rank=2",
         *SMALL),
        ("evaluate", "--model", ft, "--data", prepared, "--split", "test", "--out", str(tmp_path / "test")),
        ("export", "--model", ft, "--serving-root", str(tmp_path / "serving"), "--name", "scarce"))
    assert r.returncode == 0, r.stderr[-2000:]
    saved = json.load(open(os.path.join(ft, "model", "config.json")))
    trained = saved["parameters"]
    assert saved["finetune_users"] == len(part)
    assert trained < json.load(open(os.path.join(pre, "model", "config.json")))["parameters"] / 2
    assert export.returncode == 0, export.stderr[-2000:]
    assert RunConfig.from_record(json.load(open(os.path.join(ft, "run.json")))["identity"]["config"]).finetune.fraction == 0.25
    assert evaluation.returncode == 0, evaluation.stderr[-2000:]
    report = json.load(open(tmp_path / "test.json"))
    slices = report["metrics_by_users"]
    seen, unseen = slices["fine-tuned users"], slices["users fine-tuning never saw"]
    assert seen["users"] == len(part) and seen["users"] + unseen["users"] == report["metrics"]["users"]
    # the whole is the users-weighted mean of its two parts
    assert report["metrics"]["ndcg@10"] * report["metrics"]["users"] == pytest.approx(
        seen["ndcg@10"] * seen["users"] + unseen["ndcg@10"] * unseen["users"])
    assert "users fine-tuning never saw" in evaluation.stdout
    bad = run_cli("finetune", "--data", prepared, "--from-scratch", "--out", str(tmp_path / "bad"),
                  "--set", "finetune.fraction=0", *SMALL)
    assert_clean_error(bad, "finetune.fraction is a share of the labels")


def test_pretraining_on_two_datasets_then_fine_tuning_on_each(prepared, tmp_path):
    import numpy as np

    from tfrec.data import corpus
    from tfrec.data.dataset import PreparedDataset, prepare
    from tfrec.data.synthetic import generate_synthetic
    from tfrec.models import persistence
    from tfrec.models.tasks import NextItemRecommender
    from tfrec.training import pooled
    from tfrec.training.config import RunConfig
    from tfrec.training.trainer import SequenceData, build_backbone, data_fingerprint

    other = str(tmp_path / "other")
    prepare(generate_synthetic(num_users=120, num_items=40, seed=4), other)
    pre, ft = str(tmp_path / "pre"), str(tmp_path / "ft")
    r, fine, bad, alone, public, private = run_cli_batch(
        ("pretrain", "--data", prepared, "--data", other, "--link", "none", "--out", pre, "--epochs", "1", *SMALL),
        ("finetune", "--data", other, "--pretrained", pre, "--out", ft, "--epochs", "1", *SMALL),
        ("pretrain", "--data", prepared, "--data", prepared, "--out", str(tmp_path / "twice"), *SMALL),
        ("pretrain", "--data", prepared, "--out", str(tmp_path / "alone"), "--set", "pretrain.with_target=false",
         *SMALL),
        ("pretrain", "--data", prepared, "--data", other, "--link", "none", "--out", str(tmp_path / "public"),
         "--epochs", "1", "--set", "pretrain.with_target=false", *SMALL),
        ("finetune", "--data", prepared, "--pretrained", str(tmp_path / "public"), "--out", str(tmp_path / "ft2"),
         "--epochs", "1", *SMALL))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "pretraining on 2 datasets" in r.stdout
    saved = json.load(open(os.path.join(pre, "model", "config.json")))
    record = saved["corpus"]
    sizes = [len(PreparedDataset(d).item_vocab.tokens) for d in (prepared, other)]
    assert saved["backbone"]["vocabulary_size"] == len(record["item_keys"]) == sum(sizes) - 3  # kept apart
    assert fine.returncode == 0, fine.stderr[-2000:]
    assert f"{sizes[1] - 3} of the {sizes[1] - 3} items start from the pretraining corpus" in fine.stdout
    assert_clean_error(bad, "named twice")
    assert_clean_error(alone, "pass them after the target")
    # pretrain.with_target: false pools the other dataset's sequences alone, in the same item space
    with_target, _, key = pooled.load([prepared, other], RunConfig(), "none")
    without, _, other_key = pooled.load([prepared, other], RunConfig().updated({"pretrain.with_target": False}), "none")
    others = len(with_target.train) - len(without.train)
    assert others == len(SequenceData.load(prepared).train) > 0 and len(without.train) == 120
    assert without.vocabulary_size == with_target.vocabulary_size and key != other_key
    assert without.valid.targets.tolist() == with_target.valid.targets.tolist()
    # a fine-tuning on the target from that pretraining starts none of its (unlinked, never trained) items
    # from the pretraining, and says so
    assert public.returncode == 0 and private.returncode == 0, (public.stderr + private.stderr)[-2000:]
    assert f"0 of the {sizes[0] - 3} items start from the pretraining corpus" in private.stdout
    # fine-tuning on the second dataset starts each of its items from its pooled row
    source, _ = persistence.load(os.path.join(pre, "model"))
    target = PreparedDataset(other)
    config = RunConfig().updated({"model.hidden_dim": 16, "model.intermediate_dim": 32, "model.num_layers": 1,
                                  "model.max_len": 12})
    model = NextItemRecommender(build_backbone(config, target))
    pooled.load_weights(model, source, record, target, data_fingerprint(target), os.path.join(pre, "model"))
    rows = corpus.item_map(record, target, data_fingerprint(target))
    assert (rows >= 0).all()
    np.testing.assert_array_equal(model.backbone.token_embedding.embeddings.numpy(),
                                  source.backbone.token_embedding.embeddings.numpy()[rows])
    np.testing.assert_array_equal(model.backbone.get_layer("position_embedding").get_weights()[0],
                                  source.backbone.get_layer("position_embedding").get_weights()[0])


def test_refit_trains_on_the_validation_items_and_keeps_the_last_epoch(prepared, pretrained, tmp_path):
    from tfrec.data import inputs, schema
    from tfrec.data.dataset import PreparedDataset
    from tfrec.training.config import RunConfig
    from tfrec.training.trainer import SequenceData

    # The data: each training sequence gains its user's validation item, at the end.
    plain = SequenceData.load(prepared)
    refit = SequenceData.load(prepared, config=RunConfig(refit=True))
    valid = inputs.loo_sequences(PreparedDataset(prepared), schema.VALID)
    by_user = dict(zip(valid.user_indices.tolist(), valid.targets.tolist()))
    users, _ = inputs.loo_sequences(PreparedDataset(prepared), schema.TRAIN)
    assert len(refit.train) == len(plain.train) > 0
    for user, before, after in zip(users.tolist(), plain.train, refit.train):
        assert after.tolist() == before.tolist() + [by_user[user]]
    assert refit.valid.targets.tolist() == plain.valid.targets.tolist()
    # valid_users: a seeded sample of the validation users, the same one every time
    sample = SequenceData.load(prepared, config=RunConfig(valid_users=7))
    assert len(sample.valid.targets) == 7 and len(set(sample.valid.user_indices.tolist())) == 7
    assert set(zip(sample.valid.user_indices.tolist(), sample.valid.targets.tolist())) <= \
        set(zip(plain.valid.user_indices.tolist(), plain.valid.targets.tolist()))
    assert SequenceData.load(prepared, config=RunConfig(valid_users=7)).valid.user_indices.tolist() == \
        sample.valid.user_indices.tolist()

    # A learning rate of 0 never improves validation; a refit keeps the last epoch anyway, never stops early.
    out = str(tmp_path / "refit")
    r = run_cli("finetune", "--data", prepared, "--from-scratch", "--out", out, "--epochs", "3",
                "--learning-rate", "0", "--set", "finetune.patience=1", "--set", "refit=true", *SMALL)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.load(open(os.path.join(out, "run.json")))["summary"]
    assert summary["refit"] and summary["best_epoch"] == 3 and summary["epochs_run"] == 3
    assert not summary["stopped_early"] and "not held out" in r.stdout
    assert json.load(open(os.path.join(out, "model", "config.json")))["epoch"] == 3
    # Its validation figures are not held out: evaluate refuses them, and the test split works.  A refit
    # pretrained model would leak the validation items into a plain fine-tuning run's selection.
    pre_refit, o = str(tmp_path / "pre-refit"), str(tmp_path / "o")
    valid, test, pre, finetune, retrieval, random_split = run_cli_batch(
        ("evaluate", "--model", out, "--data", prepared, "--split", "valid"),
        ("evaluate", "--model", out, "--data", prepared, "--split", "test"),
        ("pretrain", "--data", prepared, "--out", pre_refit, "--epochs", "1", "--set", "refit=true", *SMALL),
        ("finetune", "--data", prepared, "--pretrained", pre_refit, "--out", o, "--epochs", "1", *SMALL),
        ("finetune", "--task", "retrieval", "--data", prepared, "--pretrained", pre_refit, "--out", o, "--epochs", "1",
         *SMALL),
        ("pretrain", "--data", prepared, "--out", o, "--set", "refit=true", "--set", "split=random"))
    assert_clean_error(valid, "not held out")
    assert test.returncode == 0 and pre.returncode == 0, test.stderr[-2000:] + pre.stderr[-2000:]
    for r in (finetune, retrieval, random_split):
        assert_clean_error(r, "refit")
    assert not os.path.exists(o)


def test_training_bad_input(prepared, pretrained, tmp_path):
    pre, _ = pretrained
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "x.txt").write_text("x")
    out = str(tmp_path / "o")
    cases = [
        (("pretrain", "--data", tmp_path / "nope", "--out", out), "not a folder"),
        (("finetune", "--data", prepared, "--out", out), "--pretrained"),
        (("pretrain", "--data", prepared, "--out", out, "--set", "pretrain.nope=1"), "unknown setting"),
        (("pretrain", "--data", prepared, "--out", out, "--strategy", "tpu-pod"), "unknown strategy"),
        (("finetune", "--data", prepared, "--from-scratch", "--out", out, "--set", "finetune.examples=everything"),
         "unknown finetune.examples"),
        (("finetune", "--data", prepared, "--from-scratch", "--out", out, "--set", "finetune.lr_schedule=wavy"),
         "unknown finetune.lr_schedule"),
        # a pretrained backbone of another shape
        (("finetune", "--data", prepared, "--pretrained", pre, "--out", tmp_path / "o2", "--set", "model.hidden_dim=8",
          "--set", "model.max_len=12"), "hidden_dim"),
        # a run folder holding another run
        (("pretrain", "--data", prepared, "--out", pre, "--epochs", "1", *SMALL), "other data or settings"),
        (("pretrain", "--data", prepared, "--out", tmp_path / "stuff"), "not a tfrec run folder"),
        (("evaluate", "--model", tmp_path / "stuff", "--data", prepared), "no saved tfrec model"),
        (("evaluate", "--data", prepared), "exactly one of"),
    ]
    for (argv, message), r in zip(cases, run_cli_batch(*(argv for argv, _ in cases))):
        assert_clean_error(r, message)
    assert not os.path.exists(out) and not os.path.exists(tmp_path / "o2")  # refused before anything was written


def test_distillation_from_a_teacher(prepared, pretrained, tmp_path):
    import numpy as np

    from tfrec.data import inputs
    from tfrec.errors import TfrecError
    from tfrec.training import distill
    from tfrec.training.trainer import SequenceData

    pre, _ = pretrained
    teacher, student, o = str(tmp_path / "teacher"), str(tmp_path / "student"), str(tmp_path / "o")
    distil = ("finetune", "--data", prepared, "--pretrained", pre, "--out", student, "--epochs", "2",
              "--teacher", teacher, "--set", "finetune.distill_top_k=7", "--set", "finetune.distill_weight=0.5",
              # the student with output-only and last-item vectors, as configs/beauty-distill.yaml's
              "--set", "finetune.output_extra_dim=4", "--set", "finetune.output_last_item=true", *SMALL)
    t, s, again, missing, causal, retrieval = run_cli_batch(
        ("finetune", "--data", prepared, "--pretrained", pre, "--out", teacher, "--epochs", "1", *SMALL),
        distil, distil,
        ("finetune", "--data", prepared, "--from-scratch", "--out", o, "--teacher", str(tmp_path / "nope"), *SMALL),
        ("finetune", "--data", prepared, "--from-scratch", "--out", o, "--teacher", teacher,
         "--set", "finetune.examples=causal", *SMALL),
        ("finetune", "--task", "retrieval", "--data", prepared, "--pretrained", pre, "--out", o, "--teacher", teacher))
    assert t.returncode == 0 and s.returncode == 0, t.stderr[-2000:] + s.stderr[-2000:]
    assert "scoring" in s.stdout and "with the teacher at" in s.stdout
    run = json.load(open(os.path.join(student, "run.json")))
    assert run["status"] == "done" and run["identity"]["teacher"] == os.path.join(teacher, "model")
    epochs = json.load(open(os.path.join(student, "validation.json")))["epochs"]
    assert all(e["distill_loss"] > 0 and e["loss"] > e["item_loss"] for e in epochs.values())
    # the cached targets: the teacher's top 7 items of every training example
    x, _ = inputs.next_item_examples(SequenceData.load(prepared).train, 12)
    with np.load(os.path.join(student, distill.CACHE_FILE)) as cached:
        assert cached["ids"].shape == cached["probs"].shape == (len(x), 7)
        np.testing.assert_allclose(cached["probs"].sum(1), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(cached["examples"], x)
    assert again.returncode == 0 and "finished fine-tuning run" in again.stdout
    # the head's new vectors trained from zero, and the export (core ops, loaded by TensorFlow
    # alone) answers with the model's own top items
    from tests.integration.test_export import model_top, probe
    from tfrec.data.dataset import PreparedDataset
    from tfrec.models import persistence

    model, _ = persistence.load(os.path.join(student, "model"))
    assert model.head.item_matrix().shape[1] == model.backbone.hidden_dim + 4
    assert np.abs(model.head._last_item_vectors.numpy()).max() > 0
    root = str(tmp_path / "serving")
    exported = run_cli_batch(("export", "--model", student, "--serving-root", root, "--name", "s", "--top-k", "5"))[0]
    assert exported.returncode == 0, exported.stderr[-2000:]
    vocab = PreparedDataset(prepared).item_vocab
    history = [vocab.token(i) for i in (3, 4, 5)]
    answer = probe(os.path.join(root, "s", "1"), {"serving_default": {"history": [history]}})
    assert answer["answers"]["serving_default"]["item_ids"][0] == model_top(model, vocab, history, 5)
    assert_clean_error(missing, "does not exist")
    assert_clean_error(causal, "takes finetune.examples all-prefixes")
    assert_clean_error(retrieval, "next-item task only")
    assert not os.path.exists(o)
    for check in (distill.check_teacher, distill.load_teacher):
        with pytest.raises(TfrecError, match="other data"):
            check(teacher, 1000, "another-fingerprint", refit=False)
    # a teacher from other data is refused before the run folder is made
    other = str(tmp_path / "other")
    from tfrec.data.dataset import prepare
    from tfrec.data.synthetic import generate_synthetic

    prepare(generate_synthetic(num_users=50, num_items=30, seed=9), other)
    r = run_cli("finetune", "--data", other, "--from-scratch", "--out", o, "--teacher", teacher, *SMALL)
    assert_clean_error(r, "other data")
    assert not os.path.exists(o)


def test_same_seed_same_run(prepared, tmp_path):
    outs = []
    for name in ("a", "b"):
        out = str(tmp_path / name)
        r = run_cli("pretrain", "--data", prepared, "--out", out, "--epochs", "1", "--seed", "5",
                    "--set", "pretrain.num_sampled=10", *SMALL)
        assert r.returncode == 0, r.stderr[-2000:]
        outs.append(json.load(open(os.path.join(out, "validation.json")))["epochs"]["1"])
    for key in ("loss", "val_ndcg@10", "val_mrr"):
        assert outs[0][key] == outs[1][key], key


def test_sigkill_mid_run_then_same_command_resumes(prepared, tmp_path):
    out = str(tmp_path / "run")
    args = [sys.executable, "-m", "tfrec", "pretrain", "--data", prepared, "--out", out, "--epochs", "4",
            "--set", "pretrain.steps_per_epoch=40", "--set", "backup_every_steps=5", *SMALL]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    state = os.path.join(out, "validation.json")
    deadline = time.time() + 240
    while time.time() < deadline and not os.path.exists(state):
        time.sleep(0.2)
    time.sleep(1.5)  # into the second epoch, past a mid-epoch backup
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert os.path.exists(state), "the first epoch never finished"
    done_before = set(json.load(open(state))["epochs"])
    assert "4" not in done_before
    r = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Epoch 1/4" not in r.stdout  # continued, not restarted
    final = json.load(open(state))
    assert set(final["epochs"]) == {"1", "2", "3", "4"}
    assert json.load(open(os.path.join(out, "run.json")))["status"] == "done"


def test_private_pretraining_and_fine_tuning_report_their_budget(prepared, tmp_path):
    """DP-SGD from the config: a target epsilon sets the pretraining's noise, a noise multiplier the
    fine-tuning's; each run records the (epsilon, delta) it spent, for one user's whole history."""
    pre, ft = str(tmp_path / "pre"), str(tmp_path / "ft")
    private = ["--set", "privacy.target_epsilon=4", "--set", "pretrain.continuation_weight=0", "--set",
               "pretrain.batch_size=50"]
    refused, sampled, done, tuned = run_cli_batch(
        ["pretrain", "--data", prepared, "--out", str(tmp_path / "x"), "--epochs", "2", "--set",
         "privacy.noise_multiplier=1", *SMALL],
        ["finetune", "--data", prepared, "--out", str(tmp_path / "y"), "--from-scratch", "--epochs", "1", "--set",
         "privacy.noise_multiplier=1", "--set", "finetune.num_sampled=20", *SMALL],
        ["pretrain", "--data", prepared, "--out", pre, "--epochs", "3", *private, *SMALL],
        ["finetune", "--data", prepared, "--pretrained", pre, "--out", ft, "--epochs", "2", "--set",
         "privacy.noise_multiplier=1.2", "--set", "privacy.stages=[finetune]", "--set", "finetune.batch_size=40",
         *SMALL])
    # segment continuation mixes the rows of a batch: no per-example gradient, so it is refused
    assert refused.returncode == 2 and "set pretrain.continuation_weight to 0" in refused.stderr
    assert not os.path.exists(tmp_path / "x")
    # a sampled softmax draws negatives by the data's item counts, outside the noise: refused too
    assert sampled.returncode == 2 and "set finetune.num_sampled to 0" in sampled.stderr
    assert "Traceback" not in sampled.stderr and not os.path.exists(tmp_path / "y")
    assert done.returncode == 0, done.stderr[-2000:]
    spent = json.load(open(os.path.join(pre, "run.json")))["summary"]["privacy"]
    # 200 users sampled at 50 / 200 per step, 4 steps an epoch, 3 epochs; delta 1 / users
    assert spent["unit"] == "user" and spent["units"] == 200 and spent["sample_rate"] == 0.25
    assert spent["steps"] == 12 and spent["delta"] == 1 / 200 and 3.9 < spent["epsilon"] <= 4.0
    assert "privacy: (epsilon 4" in done.stdout
    assert tuned.returncode == 0, tuned.stderr[-2000:]
    summary = json.load(open(os.path.join(ft, "run.json")))["summary"]
    assert summary["privacy"]["noise_multiplier"] == 1.2 and summary["privacy"]["steps"] == 10
    from tfrec.training.privacy import epsilon

    assert summary["privacy"]["epsilon"] == epsilon(1.2, 0.2, 10, 1 / 200)
    assert summary["valid"]["ndcg@10"] > 0
