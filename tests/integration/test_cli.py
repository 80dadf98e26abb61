"""The CLI end to end, in fresh processes: exit codes, one-sentence errors, no tracebacks."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.conftest import REPO, TINY_MOVIELENS, dataset_dir, run_cli
from tfrec.training.config import RunConfig

pytestmark = pytest.mark.e2e


def assert_clean_error(r, *fragments):
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("tfrec: error:")]
    assert len(lines) == 1, r.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def test_prepare_csv_and_stats(tmp_path):
    (tmp_path / "e.csv").write_text("uid,sku,ts\n" + "".join(f"u{u},i{(u + k) % 7},{k}\n" for u in range(5) for k in range(6)))
    out = tmp_path / "prepared"
    r = run_cli("data", "prepare", "csv", "--path", str(tmp_path / "e.csv"), "--columns",
                "user_id=uid,item_id=sku,timestamp=ts", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "| users" in r.stdout and "| 5 " in r.stdout.split("| users")[1].splitlines()[0]
    r = run_cli("data", "stats", str(out), "--json")
    stats = json.loads(r.stdout)
    assert (stats["num_users"], stats["num_items"], stats["num_interactions"]) == (5, 7, 30)


def test_bad_inputs_exit_2_with_one_sentence(tmp_path):
    assert_clean_error(run_cli("data", "prepare", "movielens-100k", "--path", str(tmp_path), "--out", str(tmp_path / "o")),
                       "u.data is missing")
    (tmp_path / "e.csv").write_text("a;b;c\n1;2;3\n")
    assert_clean_error(run_cli("data", "prepare", "csv", "--path", str(tmp_path / "e.csv"), "--out", str(tmp_path / "o")),
                       "lacks the column", "user_id")
    (tmp_path / "f.csv").write_text("user_id,item_id,timestamp\n")
    assert_clean_error(run_cli("data", "prepare", "csv", "--path", str(tmp_path / "f.csv"), "--out", str(tmp_path / "o")),
                       "holds no rows")
    assert_clean_error(run_cli("data", "stats", str(tmp_path)), "not a prepared dataset")
    assert_clean_error(run_cli("data", "prepare", "csv", "--out", str(tmp_path / "o")), "needs a path")
    assert_clean_error(run_cli("data", "prepare"), "required")
    assert_clean_error(run_cli("data", "prepare", "csv", "--path", str(tmp_path / "e.csv"), "--test-fraction", "x",
                               "--out", "o"), "invalid float value")
    assert not (tmp_path / "o").exists()


def test_interrupt_leaves_no_partial_output(tmp_path):
    """SIGINT during prepare: exit 130, and neither the output nor a staging folder survives."""
    big = tmp_path / "big.csv"
    with open(big, "w") as f:
        f.write("user_id,item_id,timestamp\n")
        for i in range(1_500_000):
            f.write(f"u{i % 5000},i{i % 3000},{i}\n")

    def staging():
        return any(n.startswith(".out.partial") for n in os.listdir(tmp_path))

    for _ in range(3):
        # A test run started in the background of a shell inherits SIGINT ignored; the CLI is meant to be
        # interrupted as from a terminal, so the child gets the default disposition back.
        p = subprocess.Popen([sys.executable, "-m", "tfrec", "data", "prepare", "csv", "--path", str(big), "--out",
                              str(tmp_path / "out")], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.time() + 120
        while time.time() < deadline and p.poll() is None and not staging():
            time.sleep(0.01)
        # Frozen while its staging folder exists, the process gets the interrupt there, whatever its speed.
        p.send_signal(signal.SIGSTOP)
        caught = staging()
        if caught:
            p.send_signal(signal.SIGINT)
        p.send_signal(signal.SIGCONT)
        _, err = p.communicate(timeout=120)
        if caught:
            break
        shutil.rmtree(tmp_path / "out", ignore_errors=True)  # it finished first: try again
    else:
        pytest.fail(f"prepare never held its staging folder long enough to be interrupted there: {err[-1000:]}")
    assert p.returncode == 130, err
    assert "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == ["big.csv"]


def test_prepare_local_copy_through_data_dir_env(tmp_path):
    root = os.path.dirname(dataset_dir("ml-100k"))
    r = run_cli("data", "prepare", "movielens-100k", "--out", str(tmp_path / "ml"), env={"TFREC_DATA_DIR": root})
    assert r.returncode == 0, r.stderr
    assert "943" in r.stdout and "1,682" in r.stdout and "100,000" in r.stdout


# The quickstart pipeline at a fifth of the default run's cost: tfrec/configs/quickstart.yaml with the tiny
# MovieLens settings of tests/conftest.py and one short rating epoch.  Even this beats popularity clearly
# on the test split (NDCG@10 .059 against .044 on a 2-core machine).
TINY_QUICKSTART = {**TINY_MOVIELENS, "tasks.epochs": 1, "tasks.steps_per_epoch": 40}


@pytest.mark.slow
def test_quickstart_is_the_pipeline_then_a_query(tmp_path):
    root = os.path.dirname(dataset_dir("ml-100k"))
    config = tmp_path / "tiny.yaml"
    default = os.path.join(REPO, "tfrec", "configs", "quickstart.yaml")
    config.write_text(yaml.safe_dump(RunConfig.from_file(default).updated(TINY_QUICKSTART).to_dict()))
    work = tmp_path / "run"
    r = run_cli("quickstart", "--workdir", str(work), "--config", str(config), env={"TFREC_DATA_DIR": root},
                timeout=1200)
    assert r.returncode == 0, r.stderr
    # The pipeline's seven steps ran, in order, each leaving its artifact, and the manifest says so.
    manifest = json.load(open(work / "pipeline" / "manifest.json"))
    steps = {s["step"]: s for s in manifest["steps"]}
    assert list(steps) == ["ingest", "transform", "pretrain", "finetune", "evaluate", "export", "push"]
    assert manifest["status"] == "done" and {s["status"] for s in steps.values()} == {"ran"}
    assert "| users" in r.stdout and "943" in r.stdout
    # The transform step's preprocessor is what training checked and recorded, and what the export read.
    preprocessor = os.path.join(steps["transform"]["output_dir"], "preprocessor")
    for run in ("next-item", "ranking"):
        used = json.load(open(os.path.join(steps["finetune"]["output_dir"], run, "preprocessor.json")))
        assert used["path"] == preprocessor and used["max_len"] == TINY_MOVIELENS["model.max_len"]
    evaluation = json.load(open(steps["evaluate"]["outputs"]["evaluation"]))
    model, pop = evaluation["next-item"]["test"], evaluation["next-item"]["popularity"]
    assert model["users"] == 943
    # even the short run must beat popularity on the test split
    assert model["ndcg@10"] > pop["ndcg@10"], (model, pop)
    assert "| pretrained + fine-tuned |" in r.stdout
    # the ranking model beats the training mean; the pushed model answers ten titled recommendations
    ranking = evaluation["ranking"]
    assert ranking["test"]["ranking"]["rmse"] < ranking["baselines"]["train_mean"]["rmse"]
    assert os.listdir(work / "serving" / "movielens-100k") == ["1"]
    served = r.stdout.split("from the server", 1)[1]
    rows = [ln for ln in served.splitlines() if ln.startswith("| ") and not ln.startswith("| rank")]
    assert len(rows) == 10 and all(ln.count("|") == 5 and ln.split("|")[4].strip() for ln in rows)
    assert "server stopped" in r.stdout
    # Run again, nothing changed: every step is found by its id and skipped, and the query still answers.
    again = run_cli("quickstart", "--workdir", str(work), "--config", str(config), env={"TFREC_DATA_DIR": root},
                    timeout=600)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("unchanged") == 7 and "server stopped" in again.stdout
    # The test split was read three times, once per figure shown (next-item, popularity, ranking), and the
    # cached rerun read it no more.
    from tfrec.evaluation import test_reads

    assert test_reads.summary(steps["ingest"]["outputs"]["data"])["reads"] == 3
