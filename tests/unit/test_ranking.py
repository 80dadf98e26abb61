import numpy as np
import pytest

from tfrec.evaluation import ranking


def test_ranks_exclude_reserved_and_history():
    # ids 0-2 are reserved; real items 3..7
    scores = np.array([[9.0, 9.0, 9.0, 0.5, 0.9, 0.1, 0.7, 0.3]])
    # order of real items: 4 (.9), 6 (.7), 3 (.5), 7 (.3), 5 (.1)
    assert ranking.target_ranks(scores, np.array([3]), None).tolist() == [2]
    # history [4, 6] removed: 3 is first
    assert ranking.target_ranks(scores, np.array([3]), [np.array([4, 6])]).tolist() == [0]
    # a target inside its own history still ranks
    assert ranking.target_ranks(scores, np.array([4]), [np.array([4])]).tolist() == [0]


def test_ties_go_to_lower_index():
    scores = np.array([[0, 0, 0, 1.0, 1.0, 1.0]])
    assert ranking.target_ranks(scores, np.array([5]), None).tolist() == [2]
    assert ranking.target_ranks(scores, np.array([3]), None).tolist() == [0]


def test_metrics_by_hand():
    m = ranking.metrics_from_ranks(np.array([0, 3, 12]))
    # HR@1 = 1/3, HR@5 = HR@10 = 2/3, HR@20 = 1
    assert m["hr@1"] == pytest.approx(1 / 3) and m["hr@5"] == pytest.approx(2 / 3) and m["hr@20"] == 1.0
    # NDCG@5 = (1/log2(2) + 1/log2(5)) / 3 = (1 + 0.4307) / 3
    assert m["ndcg@5"] == pytest.approx((1 + 1 / np.log2(5)) / 3)
    assert m["ndcg@20"] == pytest.approx((1 + 1 / np.log2(5) + 1 / np.log2(14)) / 3)
    assert m["mrr"] == pytest.approx((1 + 1 / 4 + 1 / 13) / 3)


def test_ranks_agree_with_argsort_oracle():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(50, 40))
    targets = rng.integers(3, 40, size=50)
    hist = [rng.choice(np.arange(3, 40), size=5, replace=False) for _ in range(50)]
    got = ranking.target_ranks(scores, targets, hist)
    for i in range(50):
        s = scores[i].copy()
        s[:3] = -np.inf
        s[[h for h in hist[i] if h != targets[i]]] = -np.inf
        order = np.argsort(-s, kind="stable")
        assert got[i] == int(np.flatnonzero(order == targets[i])[0])


def test_popularity_through_the_evaluator():
    train = [np.array([3, 4, 4]), np.array([4, 5])]  # counts: 4 -> 3, 3 -> 1, 5 -> 1
    scorer = ranking.popularity_scorer(train, 7)
    m, ranks = ranking.evaluate(scorer, [np.array([6]), np.array([4])], np.array([4, 3]))
    # user 1: 4 is first; user 2: 4 excluded, 3 and 5 tie -> 3 (lower id) first
    assert ranks.tolist() == [0, 0] and m["hr@1"] == 1.0 and m["users"] == 2
