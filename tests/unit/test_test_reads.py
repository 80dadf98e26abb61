"""Reads of a test split are counted in the dataset's folder and shown by tfrec data stats."""

import json
import os
import stat

from tfrec.evaluation import test_reads


def test_each_read_is_a_line_and_the_summary_counts_configs_and_models(tmp_path):
    d = str(tmp_path)
    assert test_reads.summary(d) == {"reads": 0, "configs": 0, "scored": 0}
    test_reads.record(d, "popularity", "popularity", {"ndcg@10": 0.04}, "next-item")
    test_reads.record(d, "runs/a", {"seed": 0}, {"ndcg@10": 0.09}, "next-item")
    test_reads.record(d, "runs/b", {"seed": 0}, {"ndcg@10": 0.08}, "next-item")
    with open(tmp_path / test_reads.FILE, "a") as f:
        f.write('{"cut short')  # a write interrupted half-way is skipped, not fatal
    assert test_reads.summary(d) == {"reads": 3, "configs": 2, "scored": 3}
    first = test_reads.reads(d)[0]
    assert first["scored"] == "popularity" and first["metrics"] == {"ndcg@10": 0.04} and first["time"]


def test_a_read_only_dataset_warns_and_goes_on(tmp_path, capsys):
    os.chmod(tmp_path, stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(tmp_path, os.W_OK):  # root ignores the mode: nothing to check here
            return
        test_reads.record(str(tmp_path), "m", {}, {}, "next-item")
        assert "could not be recorded" in capsys.readouterr().err
    finally:
        os.chmod(tmp_path, stat.S_IRWXU)


def test_evaluate_on_test_and_data_stats_count_the_reads(tmp_path, synthetic_prepared):
    import shutil

    from tests.conftest import run_cli

    data = str(tmp_path / "data")
    shutil.copytree(synthetic_prepared.path, data)
    r = run_cli("evaluate", "--baseline", "popularity", "--data", data, "--split", "test", "--out",
                str(tmp_path / "pop"))
    assert r.returncode == 0, r.stderr
    v = run_cli("evaluate", "--baseline", "popularity", "--data", data, "--split", "valid", "--out",
                str(tmp_path / "pop_valid"))
    assert v.returncode == 0, v.stderr
    stats = run_cli("data", "stats", data, "--json")
    assert json.loads(stats.stdout)["test_reads"] == {"reads": 1, "configs": 1, "scored": 1}  # validation is free
    row = [ln for ln in run_cli("data", "stats", data).stdout.splitlines() if ln.startswith("| test split reads")]
    assert len(row) == 1 and "| 1 (by 1 distinct configs" in row[0]
