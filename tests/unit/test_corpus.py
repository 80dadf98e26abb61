"""Pretraining corpora: items of several datasets pooled by title or kept apart, features pooled by name, and
a dataset's items mapped back onto the pooled ones."""

import numpy as np
import pandas as pd
import pytest

from tfrec.data import corpus, schema
from tfrec.data.dataset import prepare
from tfrec.data.table_loader import load_table
from tfrec.errors import TfrecError


def dataset(tmp_path, name, titles, genres):
    """A prepared dataset over items 0..n-1 with these titles (year 1999) and genres; item i is seen by
    n - i + 3 users, so the more frequent items come first."""
    n = len(titles)
    interactions = pd.DataFrame(
        [(f"u{u}", f"{name}{i}", u * 1000 + i * 10 + r) for i in range(n) for u in range(n - i + 3) for r in range(1)],
        columns=["user_id", "item_id", "timestamp"])
    items = pd.DataFrame({"item_id": [f"{name}{i}" for i in range(n)], "title": titles, "year": [1999] * n,
                          "genres": genres})
    return prepare(load_table(interactions, items=items, list_columns=("genres",)), str(tmp_path / name))


def index_of(ds, item_id):
    return ds.item_vocab.tokens.index(item_id)


def test_titles_link_items_across_datasets_and_features_pool_by_name(tmp_path):
    a = dataset(tmp_path, "a", ["Usual Suspects, The", "Twelve Monkeys", "Heat"], [["Crime"], ["Sci-Fi"], ["Crime"]])
    b = dataset(tmp_path, "b", ["Twelve Monkeys (a.k.a. 12 Monkeys)", "Alien", "Heat", "Heat"],
                [["Sci-Fi"], ["Horror"], ["Drama"], ["Crime"]])
    pooled = corpus.pool([a, b], ["fa", "fb"], "title", features=True)
    # 3 reserved + a's three + b's Alien and its two Heats (Heat is not unique in b, so neither links)
    assert len(pooled.keys) == 3 + 3 + 3 and pooled.linked_items == 1
    monkeys = pooled.item_maps[0][index_of(a, "a1")]
    assert pooled.item_maps[1][index_of(b, "b0")] == monkeys == pooled.keys.index("title:twelve monkeys (1999)")
    assert pooled.item_maps[0][index_of(a, "a2")] != pooled.item_maps[1][index_of(b, "b2")]
    assert pooled.keys[pooled.item_maps[1][index_of(b, "b1")]] == "title:alien (1999)"
    assert pooled.keys[pooled.item_maps[1][index_of(b, "b3")]] == "fb:b3"  # a title b holds twice: kept apart
    # genres are one feature space: Crime is one id for both datasets
    crime = pooled.feature_keys.index("genres=Crime")
    assert crime in pooled.feature_table[pooled.item_maps[0][index_of(a, "a0")]]
    assert crime in pooled.feature_table[pooled.item_maps[1][index_of(b, "b3")]]
    assert len(set(pooled.feature_keys)) == len(pooled.feature_keys)
    assert sorted(k for k in pooled.feature_keys if k.startswith("genres=")) == [
        "genres=Crime", "genres=Drama", "genres=Horror", "genres=Sci-Fi"]
    # without links, the two Twelve Monkeys stay apart
    apart = corpus.pool([a, b], ["fa", "fb"], "none", features=False)
    assert apart.linked_items == 0 and len(apart.keys) == 3 + 3 + 4 and apart.feature_table.shape[1] == 0


def test_a_dataset_maps_onto_a_recorded_corpus_and_new_items_are_marked(tmp_path):
    a = dataset(tmp_path, "a", ["Heat", "Twelve Monkeys"], [["Crime"], ["Sci-Fi"]])
    b = dataset(tmp_path, "b", ["Twelve Monkeys", "Alien"], [["Sci-Fi"], ["Horror"]])
    record = corpus.pool([a], ["fa"], "title", features=True).record()
    mapping = corpus.item_map(record, b, "fb")
    assert mapping[:schema.NUM_ITEM_RESERVED].tolist() == list(range(schema.NUM_ITEM_RESERVED))
    assert mapping[index_of(b, "b0")] == record["item_keys"].index("title:twelve monkeys (1999)")
    assert mapping[index_of(b, "b1")] == -1  # Alien: not in the corpus, starts fresh
    features = corpus.feature_map(record, b)
    keys = record["feature_keys"]  # a's genres and titles (a title is a categorical feature too)
    assert features[0] == 0 and sorted(features[1:].tolist()) == [
        -1, -1, keys.index("genres=Sci-Fi"), keys.index("title=Twelve Monkeys")]  # Horror, Alien: new


def test_a_dataset_named_twice_and_an_unknown_link_are_refused(tmp_path):
    a = dataset(tmp_path, "a", ["Heat"], [["Crime"]])
    with pytest.raises(TfrecError, match="named twice"):
        corpus.pool([a, a], ["fa", "fa"], "title", features=False)
    with pytest.raises(TfrecError, match="unknown --link"):
        corpus.item_keys(a, "fa", "isbn")
    assert corpus.normalised_title("Willy Wonka & the Chocolate Factory") == "willy wonka and the chocolate factory"
    assert np.array_equal(corpus.item_map(corpus.pool([a], ["fa"], "none", False).record(), a, "fa"),
                          np.arange(len(a.item_vocab.tokens)))
