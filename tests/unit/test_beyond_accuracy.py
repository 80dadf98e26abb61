"""Beyond-accuracy measures and fairness slices against values worked out by hand.

Item indices 0-2 are reserved; the real items are 3, 4, 5, 6 (and 7 where a test needs a fifth)."""

import numpy as np
import pytest

from tfrec.evaluation import beyond_accuracy as ba
from tfrec.evaluation import ranking

NUM_ITEMS = 7


def test_coverage_and_gini_of_exposure():
    lists = np.array([[3, 4], [3, 5]])  # exposure of 3, 4, 5, 6: 2, 1, 1, 0
    assert ba.exposure(lists, NUM_ITEMS).tolist() == [0, 0, 0, 2, 1, 1, 0]
    assert ba.coverage(lists, NUM_ITEMS) == pytest.approx(3 / 4)
    # sorted 0, 1, 1, 2: sum (2i - n - 1) x_i = -3*0 - 1*1 + 1*1 + 3*2 = 6, over n * total = 16
    assert ba.exposure_gini(lists, NUM_ITEMS) == pytest.approx(6 / 16)
    assert ba.gini([5, 5, 5]) == 0.0
    assert ba.gini([0, 0, 0, 9]) == pytest.approx(1 - 1 / 4)  # one item holds everything
    assert ba.gini([0, 0]) == 0.0


def test_intra_list_diversity_over_vectors():
    vectors = np.array([[0, 0], [0, 0], [0, 0], [1, 0], [0, 1], [1, 1], [0, 0]], float)
    # [3, 4]: orthogonal, 1 - 0 = 1; [3, 5]: cosine 1/sqrt(2); [3, 6]: item 6 has no vector, so no pair
    value = ba.intra_list_diversity(np.array([[3, 4], [3, 5], [3, 6]]), vectors)
    assert value == pytest.approx((1 + (1 - 1 / np.sqrt(2))) / 2)
    assert ba.intra_list_diversity(np.array([[3, 6]]), vectors) is None
    # three items: pairs (3,4) 0, (3,5) .7071, (4,5) .7071 -> 1 - mean
    assert ba.intra_list_diversity(np.array([[3, 4, 5]]), vectors) == pytest.approx(1 - 2 / np.sqrt(2) / 3)


def test_attribute_vectors_are_multi_hot_without_the_none_id():
    table = np.array([[0, 0], [1, 2], [2, 0]])
    assert ba.attribute_vectors(table, 3).tolist() == [[0, 0, 0], [0, 1, 1], [0, 0, 1]]


def test_novelty_and_average_popularity():
    train = [np.array([3, 4]), np.array([3, 5]), np.array([3, 3])]  # item 3 by 3 users (counted once each)
    counts = ba.user_counts(train, NUM_ITEMS)
    assert counts.tolist() == [0, 0, 0, 3, 1, 1, 0]
    lists = np.array([[3, 4]])
    assert ba.novelty(lists, counts, 3) == pytest.approx((np.log2(3 / 3) + np.log2(3 / 1)) / 2)
    assert ba.average_popularity(lists, counts, 3) == pytest.approx((3 / 3 + 1 / 3) / 2)
    assert ba.novelty(np.array([[6]]), counts, 3) == pytest.approx(np.log2(3))  # unseen items count as 1 user


def test_popularity_groups_split_interactions_into_head_middle_and_tail():
    interactions = np.array([0, 0, 0, 6, 2, 1, 1, 0])  # total 10; before each, most popular first: 0 .6 .8 .9
    groups = ba.popularity_groups(interactions)
    assert groups.tolist() == ["", "", "", "head", "middle", "tail", "tail", "tail"]
    shares = ba.group_exposure(np.array([[3, 7], [4, 7]]), interactions, groups)
    assert shares["head"] == {"items": 1, "interaction_share": 0.6, "recommendation_share": 0.25}
    assert shares["middle"] == {"items": 1, "interaction_share": 0.2, "recommendation_share": 0.25}
    assert shares["tail"]["items"] == 3
    assert shares["tail"]["interaction_share"] == pytest.approx(0.2)
    assert shares["tail"]["recommendation_share"] == pytest.approx(0.5)


def test_list_metrics_gathers_every_measure():
    train = [np.array([3, 4]), np.array([3, 5])]
    out = ba.list_metrics(np.array([[3, 6], [4, 6]]), train, NUM_ITEMS,
                          attributes=np.eye(NUM_ITEMS))
    assert out["coverage@2"] == pytest.approx(3 / 4)
    assert out["diversity_attributes"] == pytest.approx(1.0)
    assert out["tail_share"] == out["popularity_groups"]["tail"]["recommendation_share"]
    assert "diversity_embeddings" not in out


def test_slice_metrics_per_group_and_the_largest_gap():
    ranks = np.array([0, 1, 20, 3])
    out = ba.slice_metrics(ranks, {"g": np.array(["a", "a", "b", ""], dtype=object)}, k=10, min_users=1)["g"]
    assert out["groups"]["a"]["ndcg@10"] == pytest.approx((1 + 1 / np.log2(3)) / 2)
    assert out["groups"]["a"]["users"] == 2 and out["groups"]["b"]["hr@10"] == 0.0
    assert "" not in out["groups"]  # unknown labels are left out
    assert out["largest_gap"] == pytest.approx((1 + 1 / np.log2(3)) / 2)
    assert (out["best"], out["worst"]) == ("a", "b")


def test_the_largest_gap_leaves_out_groups_too_small_to_compare():
    ranks = np.array([0] * 3 + [5] * 3 + [30])  # a: NDCG 1, b: 1/log2(7), c (one user): 0
    labels = {"g": np.array(["a"] * 3 + ["b"] * 3 + ["c"], dtype=object)}
    out = ba.slice_metrics(ranks, labels, min_users=3)["g"]
    assert (out["best"], out["worst"], out["gap_min_users"]) == ("a", "b", 3)
    assert out["largest_gap"] == pytest.approx(1 - 1 / np.log2(7))
    assert out["groups"]["c"] == {"ndcg@10": 0.0, "hr@10": 0.0, "users": 1}  # reported all the same
    small = ba.slice_metrics(ranks, labels, min_users=4)["g"]  # no two groups that large: every group counts
    assert (small["worst"], small["gap_min_users"]) == ("c", 1)


def test_activity_quartiles_keep_ties_in_the_lower_group():
    labels = ba.activity_labels(np.arange(1, 9))
    assert labels.tolist() == ["Q1 (1-2 items)"] * 2 + ["Q2 (3-4 items)"] * 2 + ["Q3 (5-6 items)"] * 2 + \
        ["Q4 (7-8 items)"] * 2
    assert set(ba.activity_labels(np.array([3, 3, 3, 3]))) == {"Q1 (3-3 items)"}


def test_age_bands():
    assert [ba.age_band(a) for a in (7, 18, 24, 25, 49, 50, 56, 73)] == \
        ["under 18", "18-24", "18-24", "25-34", "45-49", "50-55", "56+", "56+"]
    assert ba.age_band(None) == ""


def test_top_items_excludes_reserved_ids_and_history_and_breaks_ties_by_index():
    scores = np.array([[9, 9, 9, 0.5, 0.9, 0.9, 0.1], [0, 0, 0, 1, 2, 2, 0]], np.float32)
    assert ranking.top_items(scores, [np.array([4]), np.array([], np.int64)], 2).tolist() == [[5, 3], [4, 5]]
    assert ranking.top_items(scores[1:], None, 3).tolist() == [[4, 5, 3]]


def test_ranked_returns_the_lists_in_the_users_order():
    table = np.array([[0, 0, 0, 3, 2, 1, 0], [0, 0, 0, 1, 2, 3, 0]], np.float32)
    scorer = lambda histories: np.stack([table[len(h) - 1] for h in histories])  # noqa: E731
    ranks, lists = ranking.ranked(scorer, [np.array([6, 6]), np.array([6])], np.array([3, 3]), top_k=2,
                                  batch_size=1)
    assert ranks.tolist() == [2, 0] and lists.tolist() == [[5, 4], [3, 4]]


def test_user_groups_from_activity_and_demographics():
    from types import SimpleNamespace

    import pandas as pd

    from tfrec.data.sequences import EvalSequences
    from tfrec.evaluation.sequential import user_groups

    users = pd.DataFrame({"user_id": ["a", "b", "c"], "user_index": [2, 3, 4], "age": pd.array([17, 30, None], "Int32"),
                          "gender": ["F", "M", None], "zip_code": ["1", "2", "3"]})
    features = {"age": {"kind": "numeric"}, "gender": {"kind": "categorical"}, "zip_code": {"kind": "text"}}
    dataset = SimpleNamespace(users=users, user_features=features)
    seqs = EvalSequences(np.array([4, 2, 9]), [np.array([3]), np.array([3, 4, 5]), np.array([3, 4])], np.array([3, 3, 3]))
    groups = user_groups(dataset, seqs)
    assert set(groups) == {"activity", "gender", "age band"}  # zip codes are text: no grouping
    assert groups["gender"].tolist() == ["", "F", ""]  # user 4 has none, user 9 is not in the table
    assert groups["age band"].tolist() == ["", "under 18", ""]
    assert len(set(groups["activity"])) == 3


def test_popularity_by_group_ranks_each_groups_own_favourites_first():
    from types import SimpleNamespace

    import pandas as pd

    from tfrec.data.sequences import EvalSequences
    from tfrec.evaluation.sequential import group_popularity

    users = pd.DataFrame({"user_id": list("abcd"), "user_index": [2, 3, 4, 5], "gender": ["F", "F", "M", None]})
    dataset = SimpleNamespace(users=users, user_features={"gender": {"kind": "categorical"}}, path="d")
    # F users had item 3 most, M user item 4, and everyone together item 5
    train_users = np.array([2, 3, 4, 5])
    train = [np.array([3, 3, 5]), np.array([3, 5]), np.array([4, 4, 4, 4, 4]), np.array([5, 5, 5, 5, 5, 5])]
    seqs = EvalSequences(np.array([2, 4, 5]), [np.array([], np.int64)] * 3, np.array([6, 6, 6]))
    groups = {tuple(rows.tolist()): scorer for rows, scorer in group_popularity(dataset, train_users, train, seqs, 7)}
    assert set(groups) == {(0,), (1,), (2,)}  # F, M, and the user of no known group
    top = {rows: int(np.argmax(scorer([np.array([])])[0])) for rows, scorer in groups.items()}
    assert top == {(0,): 3, (1,): 4, (2,): 5}  # the unknown user gets everyone's popularity
