"""The local copies prepare to exactly the counts their READMEs state."""

import numpy as np
import pytest

from tfrec.data import dataset, inputs, loaders, schema


@pytest.mark.parametrize(
    "source, folder, users, items, interactions",
    [
        ("movielens-100k", "ml-100k", 943, 1682, 100_000),
        ("amazon-s3rec", "amazon-beauty", 22_363, 12_101, 198_502),
        ("movielens-latest-small", "ml-latest-small", 610, 9_724, 100_836),
    ],
)
def test_counts_match_the_readmes(source, folder, users, items, interactions, tmp_path):
    from tests.conftest import dataset_dir

    d = dataset.prepare(loaders.load(source, dataset_dir(folder)), str(tmp_path / folder))
    s = d.stats
    assert (s["num_users"], s["num_items"], s["num_interactions"]) == (users, items, interactions)
    assert s["splits"]["loo"]["test"] == users and s["splits"]["loo"]["valid"] == users


def test_beauty_details(beauty_dir, tmp_path):
    d = dataset.prepare(loaders.load("amazon-s3rec", beauty_dir), str(tmp_path / "b"))
    seq = d.stats["sequence_length"]
    assert (seq["min"], seq["max"]) == (5, 204) and seq["mean"] == pytest.approx(8.88, abs=0.005)
    assert d.meta["input_checksums"]["Beauty.txt"] == "226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8"
    assert len(d.feature_vocab("item", "attributes")) == 637 + 2
    # user 1's line is its history in order: the test item is its last item
    first_line = open(f"{beauty_dir}/Beauty.txt").readline().split()
    test = d.split(schema.TEST).set_index(schema.USER_ID)
    valid = d.split(schema.VALID).set_index(schema.USER_ID)
    assert test.loc[first_line[0], schema.ITEM_ID] == first_line[-1]
    assert valid.loc[first_line[0], schema.ITEM_ID] == first_line[-2]


def test_ml100k_features(ml100k_dir, tmp_path):
    d = dataset.prepare(loaders.load("movielens-100k", ml100k_dir), str(tmp_path / "m"))
    items = d.items.set_index(schema.ITEM_ID)
    assert items.loc["1", schema.TITLE] == "Toy Story"
    assert items.loc["1", schema.YEAR] == 1995
    assert list(items.loc["1", schema.GENRES]) == ["Animation", "Children's", "Comedy"]
    assert d.stats["ratings"]["counts"] == {"1": 6110, "2": 11370, "3": 27145, "4": 34174, "5": 21201}
    assert d.users.set_index(schema.USER_ID)[schema.GENDER].value_counts().to_dict() == {"M": 670, "F": 273}
    ev = inputs.loo_sequences(d, schema.TEST)
    assert len(ev.targets) == 943 and min(len(h) for h in ev.histories) == 19
    assert np.all(ev.targets >= schema.NUM_ITEM_RESERVED)
