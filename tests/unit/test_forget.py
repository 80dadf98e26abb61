"""`tfrec data forget`: users leave a prepared dataset as if they had never been in its source, and the runs
and exports trained on the old data are named."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from tfrec.cli import main
from tfrec.data import dataset, forget, preprocess, schema
from tfrec.data.dataset import PreparedDataset
from tfrec.data.synthetic import generate_synthetic
from tfrec.errors import TfrecError

GONE = ["u3", "u10"]
SETTINGS = preprocess.PrepareConfig(min_item_interactions=2, seed=5)


@pytest.fixture()
def prepared(tmp_path):
    raw = generate_synthetic(num_users=60, num_items=40, seed=1)
    path = str(tmp_path / "data")
    dataset.prepare(raw, path, SETTINGS)
    return raw, path


def test_forgetting_is_preparing_without_the_users(prepared, tmp_path):
    raw, path = prepared
    before = PreparedDataset(path)
    removed_rows, old_stats = int(before.interactions[schema.USER_ID].isin(GONE).sum()), before.stats
    old_fingerprint = before.fingerprint
    new, fingerprint, removed = forget.forget(path, GONE + ["u3"])  # a repeated id counts once
    assert fingerprint == old_fingerprint != new.fingerprint and removed == removed_rows > 0
    # the same dataset as preparing the source without them, with the same settings
    raw.interactions = raw.interactions[~raw.interactions[schema.USER_ID].isin(GONE)].reset_index(drop=True)
    raw.users = raw.users[~raw.users[schema.USER_ID].isin(GONE)].reset_index(drop=True)
    direct = dataset.prepare(raw, str(tmp_path / "direct"), SETTINGS)
    pd.testing.assert_frame_equal(new.interactions, direct.interactions)
    for scheme in schema.SPLIT_SCHEMES:
        for part in ("train", "test"):
            pd.testing.assert_frame_equal(new.split(part, scheme), direct.split(part, scheme))
    assert new.item_vocab.tokens == direct.item_vocab.tokens and new.user_vocab.tokens == direct.user_vocab.tokens
    pd.testing.assert_frame_equal(new.users, direct.users)
    assert not set(GONE) & set(new.user_vocab.tokens) and not new.users[schema.USER_ID].isin(GONE).any()
    # what the folder says of it: how many were forgotten, never who
    meta = open(os.path.join(path, schema.DATASET_JSON)).read() + open(os.path.join(path, schema.STATS_JSON)).read()
    assert json.loads(open(os.path.join(path, schema.DATASET_JSON)).read())["derived"] == {"forgotten_users": 2}
    assert not any(f'"{u}"' in meta for u in GONE)
    assert new.stats["num_users"] == old_stats["num_users"] - 2


def test_the_runs_and_exports_trained_on_the_old_data_are_found(prepared, tmp_path, capsys):
    _, path = prepared
    old = PreparedDataset(path).fingerprint
    run, other, export = tmp_path / "runs" / "a", tmp_path / "runs" / "b", tmp_path / "serving" / "m" / "1"
    for folder, record in ((run, {"identity": {"data": old}}), (other, {"identity": {"data": "something-else"}})):
        folder.mkdir(parents=True)
        (folder / "run.json").write_text(json.dumps(record))
    (export / "assets.extra").mkdir(parents=True)
    (export / "assets.extra" / "tfrec_model.json").write_text(json.dumps({"data_fingerprint": old}))
    assert main(["data", "forget", path, "--user", "u7", "--search", str(tmp_path)]) == 0
    out = capsys.readouterr()
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in out.out.splitlines()[-2:]]
    assert rows == [["run", str(run)], ["export", str(export)]]
    assert "trained on the data before" in out.out and str(other) not in out.out
    assert "removed" in out.err and "1 user from" in out.err
    assert forget.trained_on(old, [str(tmp_path)]) == [("run", str(run)), ("export", str(export))]  # by folder
    # nothing was trained on the new data yet
    assert forget.trained_on(PreparedDataset(path).fingerprint, [str(tmp_path)]) == []


def test_an_unknown_user_is_one_sentence_and_changes_nothing(prepared, capsys):
    _, path = prepared
    before = open(os.path.join(path, schema.STATS_JSON)).read()
    with pytest.raises(TfrecError, match="user 'nobody' is not in the prepared dataset"):
        forget.forget(path, ["nobody"])
    assert main(["data", "forget", path, "--user", "nobody"]) == 2
    assert "user 'nobody' is not in" in capsys.readouterr().err
    assert open(os.path.join(path, schema.STATS_JSON)).read() == before
