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


def test_pooled_metrics_equal_scoring_every_user_at_once():
    """A multi-worker job's validation: each worker ranks its own users, the sums are pooled."""
    from tfrec.evaluation.ranking import metrics_from_ranks, pooled_metrics

    ranks = np.array([0, 3, 7, 12, 40, 2, 9, 150])
    parts = [ranks[:3], ranks[3:], ranks[:0]]  # the third worker holds no validation user
    nan = {k: float("nan") for k in metrics_from_ranks(ranks)}  # an empty part's means count for nothing
    local = [dict(metrics_from_ranks(p) if len(p) else nan, users=len(p), seconds=1.0) for p in parts]
    vectors = []
    for m in local[1:]:  # the other workers' contributions, as an all-reduce would add them
        pooled_metrics(m, lambda v: vectors.append(np.asarray(v, np.float64)) or np.asarray(v))
    pooled = pooled_metrics(local[0], lambda v: np.asarray(v, np.float64) + sum(vectors))
    want = metrics_from_ranks(ranks)
    assert set(pooled) == set(want) | {"users"} and pooled["users"] == 8
    for key, value in want.items():
        assert pooled[key] == pytest.approx(value, rel=1e-12), key
    assert pooled["hr@10"] == pytest.approx(5 / 8) and pooled["mrr"] == pytest.approx(np.mean(1 / (ranks + 1)))


def test_a_worker_takes_every_nth_shard_and_needs_one_at_least():
    from tfrec.errors import TfrecError
    from tfrec.training.cluster import WorkerShare

    files = [f"loo-{i:05d}-of-00005.tfrecord" for i in range(5)]
    assert WorkerShare(None, 1, 2).shards(files, "d") == [files[1], files[3]]
    assert WorkerShare(None, 0, 2).shards(files, "d") == [files[0], files[2], files[4]]
    with pytest.raises(TfrecError, match="d has 5 sequence shards for 6 workers; prepare it with --shards 6"):
        WorkerShare(None, 0, 6).shards(files, "d")
