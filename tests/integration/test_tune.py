"""tfrec tune: a search on validation that writes the best config, never reads the test split, refuses bad
spaces in one sentence, and resumes after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.slow

TINY = ["--set", "model.backbone=gru", "--set", "finetune.examples=causal", "--set", "model.hidden_dim=8",
        "--set", "model.max_len=10", "--set", "finetune.epochs=2", "--set", "finetune.patience=0",
        "--set", "model.item_features=false"]
SPACE = {"finetune.learning_rate": {"low": 0.001, "high": 0.02, "log": True},
         "model.dropout": {"choices": [0.0, 0.2]},
         "finetune.batch_size": {"low": 32, "high": 96, "step": 32}}


def write_space(tmp_path, space=SPACE):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return str(path)


def test_search_writes_the_best_config_chosen_on_validation(tmp_path, synthetic_prepared):
    from tfrec.training.config import RunConfig

    study = tmp_path / "study"
    base = ["--set", "model.dropout=0.2", "--set", "finetune.batch_size=64"]  # inside the space
    r = run_cli("tune", "--data", synthetic_prepared.path, "--space", write_space(tmp_path), "--trials", "3",
                "--study", str(study), "--pruner", "none", *TINY, *base, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.load(open(study / "tuning.json"))
    done = [t for t in report["trials"] if t["state"] == "COMPLETE"]
    assert len(done) == 3 and report["monitor"] == "val_ndcg@10"
    # The first trial is the base config itself, so the best is never worse than it on validation.
    assert report["trials"][0]["params"] == {"finetune.learning_rate": 0.001, "model.dropout": 0.2,
                                             "finetune.batch_size": 64}
    best = max(done, key=lambda t: t["value"])
    assert report["best"]["number"] == best["number"] and report["best"]["value"] == best["value"]
    # Each trial's value is its run's best validation NDCG@10, and every setting stayed inside the space.
    for t in done:
        summary = json.load(open(study / "trials" / str(t["number"]) / "run.json"))["summary"]
        assert summary["valid"]["ndcg@10"] == pytest.approx(t["value"])
        assert 0.001 <= t["params"]["finetune.learning_rate"] <= 0.02
        assert t["params"]["model.dropout"] in (0.0, 0.2) and t["params"]["finetune.batch_size"] in (32, 64, 96)
    config = RunConfig.from_file(str(study / "best.yaml"))
    assert config.finetune.learning_rate == pytest.approx(best["params"]["finetune.learning_rate"])
    assert config.model.backbone == "gru" and config.finetune.epochs == 2  # the base config's other settings
    # Run again with the same study: it already holds 3 finished trials, so nothing more runs.
    again = run_cli("tune", "--data", synthetic_prepared.path, "--space", write_space(tmp_path), "--trials", "3",
                    "--study", str(study), "--pruner", "none", *TINY, *base, timeout=300)
    assert again.returncode == 0 and "trial 3" not in again.stdout
    # Another space in the same study is refused, in one sentence.
    other = run_cli("tune", "--data", synthetic_prepared.path, "--space",
                    write_space(tmp_path, {"model.dropout": {"choices": [0.5]}}), "--trials", "4",
                    "--study", str(study), *TINY)
    assert other.returncode == 2 and "searched another task or space" in other.stderr
    assert "Traceback" not in other.stderr


def test_a_task_trial_does_not_read_the_test_split(tmp_path, synthetic_prepared):
    study = tmp_path / "study"
    r = run_cli("tune", "--task", "retrieval", "--data", synthetic_prepared.path, "--space",
                write_space(tmp_path, {"tasks.learning_rate": {"low": 0.001, "high": 0.01}}), "--trials", "1",
                "--study", str(study), "--set", "tasks.epochs=1", "--set", "model.hidden_dim=8",
                "--set", "model.max_len=10", "--set", "split=random", timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = json.load(open(study / "trials" / "0" / "metrics.json"))
    assert "test" not in metrics and "baselines" not in metrics
    assert json.load(open(study / "tuning.json"))["monitor"].startswith("val_factorized_top_k")


@pytest.mark.parametrize("space, message", [
    ({}, "search space is empty"),
    ({"finetune.learnin_rate": {"low": 0.1, "high": 0.2}}, "is not a setting of the run config"),
    ({"finetune.learning_rate": {"low": 0.2, "high": 0.1}}, "low < high"),
    ({"finetune.learning_rate": {"low": 0.0, "high": 0.1, "log": True}}, "a log range needs low > 0"),
    ({"finetune.epochs": {"low": 1.5, "high": 3}}, "integer setting"),
    ({"finetune.examples": {"low": 1, "high": 3}}, "is not numeric"),
    ({"finetune.learning_rate": {"between": [1, 2]}}, "needs either choices"),
    ({"finetune.examples": {"choices": ["nonsense"]}}, "unknown finetune.examples"),
])
def test_bad_spaces_are_refused_in_one_sentence(tmp_path, space, message):
    from tfrec.errors import TfrecError
    from tfrec.training.config import RunConfig
    from tfrec.training.tuning import load_space

    with pytest.raises(TfrecError, match=message):
        load_space(space, RunConfig())


def test_the_base_config_is_the_first_trial_only_when_its_values_lie_in_the_space():
    from tfrec.training.config import RunConfig
    from tfrec.training.tuning import base_point, load_space

    base = RunConfig().updated({"finetune.learning_rate": 0.001, "model.dropout": 0.2, "finetune.batch_size": 64})
    assert base_point(load_space(SPACE, base), base) == {"finetune.learning_rate": 0.001, "model.dropout": 0.2,
                                                         "finetune.batch_size": 64}
    off_step = base.updated({"finetune.batch_size": 48})  # inside 32..96 but not on the step of 32
    assert base_point(load_space(SPACE, off_step), off_step) is None
    outside = base.updated({"model.dropout": 0.1})  # not one of the choices
    assert base_point(load_space(SPACE, outside), outside) is None
    too_high = base.updated({"finetune.learning_rate": 0.05})
    assert base_point(load_space(SPACE, too_high), too_high) is None


def test_a_search_killed_mid_trial_resumes_to_the_asked_number_of_trials(tmp_path, synthetic_prepared):
    study = tmp_path / "study"
    args = [sys.executable, "-m", "tfrec", "tune", "--data", synthetic_prepared.path, "--space", write_space(tmp_path),
            "--trials", "3", "--study", str(study), "--pruner", "none", *TINY]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.time() + 300
    while not (study / "trials" / "1").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stdout.read()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)  # mid-way through trial 1
    proc.wait()
    r = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.load(open(study / "tuning.json"))
    states = [t["state"] for t in report["trials"]]
    assert states.count("COMPLETE") == 3  # the trial that was killed is not counted; the search made up for it
    assert os.path.isfile(study / "best.yaml")
