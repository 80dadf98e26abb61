"""python -m pipelines.run: every step, caching, --from-step, failures that leave nothing behind."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.e2e

SMALL_RUN = {"model": {"max_len": 12, "hidden_dim": 16, "intermediate_dim": 32, "num_layers": 1},
             "pretrain": {"epochs": 1, "learning_rate": 0.01, "validate_every": 1},
             "finetune": {"epochs": 1, "learning_rate": 0.01}}


def pipeline(*args):
    return subprocess.run([sys.executable, "-m", "pipelines.run", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=900)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from tfrec.data.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("pipeline")
    raw = generate_synthetic(num_users=100, num_items=40, seed=2)
    os.makedirs(root / "raw" / "shop")
    raw.interactions.to_csv(root / "raw" / "shop" / "events.csv", index=False)
    config = {"name": "shop", "data": {"source": "csv", "path": "shop/events.csv"}, "run_config": SMALL_RUN,
              "tasks": ["next-item"], "export": {"task": "next-item", "name": "shop", "top_k": 10},
              "push": {"metric": "hr@10"}}
    path = root / "shop.yaml"
    path.write_text(yaml.safe_dump(config))
    args = ["--config", str(path), "--data-dir", str(root / "raw"), "--pipeline-root", str(root / "pipe"),
            "--serving-root", str(root / "serving")]
    first = pipeline(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    return root, args, first


def test_first_run_runs_every_step_and_pushes(setup):
    root, _, first = setup
    manifest = json.load(open(root / "pipe" / "manifest.json"))
    assert [s["step"] for s in manifest["steps"]] == ["ingest", "transform", "pretrain", "finetune", "evaluate",
                                                      "export", "push"]
    assert {s["status"] for s in manifest["steps"]} == {"ran"} and manifest["status"] == "done"
    for s in manifest["steps"]:
        assert os.path.isdir(s["output_dir"]) and s["seconds"] >= 0
    evaluation = json.load(open(root / "pipe" / "evaluate" / manifest["steps"][4]["run_id"] / "evaluation.json"))
    assert set(evaluation["next-item"]) == {"test", "popularity"}
    assert os.listdir(root / "serving" / "shop") == ["1"]
    assert not [d for step in os.listdir(root / "pipe") if os.path.isdir(root / "pipe" / step)
                for d in os.listdir(root / "pipe" / step) if d.startswith(".tmp")]


def test_rerun_with_nothing_changed_skips_every_step_and_from_step_reruns(setup):
    root, args, _ = setup
    again = pipeline(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    manifest = json.load(open(root / "pipe" / "manifest.json"))
    assert {s["status"] for s in manifest["steps"]} == {"cached"} and "ran nothing" in again.stdout
    assert os.listdir(root / "serving" / "shop") == ["1"]
    partial = pipeline(*args, "--from-step", "export")
    assert partial.returncode == 0, partial.stderr[-3000:]
    manifest = json.load(open(root / "pipe" / "manifest.json"))
    assert [s["status"] for s in manifest["steps"]] == ["cached"] * 5 + ["ran", "ran"]
    assert sorted(os.listdir(root / "serving" / "shop")) == ["1", "2"]  # the same model is not worse
    assert len(os.listdir(root / "pipe" / "manifests")) == 3


def test_changed_data_reruns_and_a_failing_step_leaves_nothing(setup, tmp_path):
    root, args, _ = setup
    config = yaml.safe_load(open(args[1]))
    config["data"]["path"] = "shop/missing.csv"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    r = pipeline("--config", str(bad), *args[2:])
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("pipeline: error: pipeline step ingest failed:")
    assert not [d for d in os.listdir(root / "pipe" / "ingest") if d.startswith(".tmp")]
    manifest = json.load(open(root / "pipe" / "manifest.json"))
    assert manifest["status"] == "failed" and manifest["steps"][-1]["status"] == "failed"
    r = pipeline("--config", str(args[1]), *args[2:], "--from-step", "nowhere")
    assert r.returncode == 2 and "unknown step 'nowhere'" in r.stderr
