"""The TFRS task model: towers, losses, scoring and persistence."""

import numpy as np
import pytest
import tensorflow as tf

from tfrec.data import schema
from tfrec.contract import USER_FEATURE_IDS
from tfrec.data.inputs import ITEM_INDICES, ITEM_INDEX, USER_INDEX
from tfrec.models import persistence
from tfrec.models.recommender import HOUR, RATING, WEEKDAY, RecommenderModel
from tfrec.models.sequence_backbone import SequenceBackbone
from tfrec.evaluation import rating
from tfrec.training import task_trainer

VOCAB = 12


def backbone(features=False):
    table = np.array([[0]] * 3 + [[1 + i % 2] for i in range(VOCAB - 3)], np.int32) if features else None
    return SequenceBackbone(VOCAB, max_len=6, hidden_dim=8, num_layers=1, num_heads=2, intermediate_dim=16,
                            dropout=0.0, feature_table=table, feature_vocabulary_size=3 if features else 0)


def batch(n=4, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, VOCAB, size=(n, 6)).astype(np.int32)
    ids[:, :2] = 0
    ids[:, -1] = schema.MASK_ID
    return {ITEM_INDICES: ids, USER_INDEX: rng.integers(0, 5, n).astype(np.int32),
            ITEM_INDEX: rng.integers(3, VOCAB, n).astype(np.int32), HOUR: np.arange(n, dtype=np.int32),
            WEEKDAY: np.arange(n, dtype=np.int32) % 7, RATING: rng.integers(1, 6, n).astype(np.float32)}


def test_query_dot_candidate_starts_as_the_pretrained_item_logit():
    tf.keras.utils.set_random_seed(1)
    users = np.array([[1, 2], [2, 3], [3, 1], [1, 1], [2, 2]], np.int32)
    model = RecommenderModel.built(backbone(features=True), task="retrieval", user_table=users, user_table_size=4,
                                   num_users=5)
    f = batch()
    scores = model.query_vectors({k: v for k, v in f.items() if k != RATING}) @ model.candidate_matrix().T
    # the extra inputs enter through zero-initialised projections, so the score is the head's logit
    logits = model.head.project(model.query_tower.history_state(tf.constant(f[ITEM_INDICES]))).numpy()
    np.testing.assert_allclose(scores, logits, rtol=1e-4, atol=1e-4)


def test_retrieval_loss_matches_an_in_batch_softmax_worked_out_in_numpy():
    tf.keras.utils.set_random_seed(2)
    probability = np.linspace(1, 2, VOCAB) / np.linspace(1, 2, VOCAB).sum()
    model = RecommenderModel.built(backbone(), task="retrieval", item_probability=probability, temperature=0.5)
    f = batch(4)
    f[ITEM_INDEX] = np.array([5, 6, 5, 7], np.int32)  # rows 0 and 2 share an item: accidental hits
    feats = {k: tf.constant(v) for k, v in f.items() if k != RATING}
    loss = float(model.compute_loss(feats, training=False))
    q = model.query_vectors({k: v for k, v in f.items() if k != RATING})
    c = model.candidate_matrix()[f[ITEM_INDEX]]
    s = q @ c.T / 0.5 - np.log(probability[f[ITEM_INDEX]])[None, :]
    same = f[ITEM_INDEX][:, None] == f[ITEM_INDEX][None, :]
    s = np.where(same & ~np.eye(4, dtype=bool), -np.inf, s)  # another row's copy of the true item is no negative
    expected = np.mean(-np.diag(s) + np.log(np.exp(s).sum(axis=1)))
    assert loss == pytest.approx(expected, rel=1e-4)


def test_ranking_starts_from_the_offsets_and_learns_a_mean_loss():
    tf.keras.utils.set_random_seed(3)
    item_bias = np.zeros(VOCAB)
    item_bias[5] = 1.0
    model = RecommenderModel.built(backbone(), task="ranking", rating_mean=3.0, num_users=5,
                                   user_bias=[0.5, 0, 0, 0, 0], item_bias=item_bias.tolist(), mlp=[8])
    f = batch(4)
    f[USER_INDEX] = np.array([0, 0, 1, 1], np.int32)
    f[ITEM_INDEX] = np.array([5, 6, 5, 6], np.int32)
    pred = model.ratings({k: v for k, v in f.items() if k != RATING})
    deep = pred - np.array([3.0 + 0.5 + 1.0, 3.5, 4.0, 3.0])
    # whatever the deep part adds on top of mean + offsets is the same function of the features
    assert np.abs(deep).max() < 2.0
    loss = float(model.compute_loss({k: tf.constant(v) for k, v in f.items()}, training=False))
    assert loss == pytest.approx(np.mean((pred - f[RATING]) ** 2) + sum(float(x) for x in model.losses), rel=1e-4)


def test_a_ranking_model_without_user_parameters_reads_features_and_gives_per_example_losses():
    """tasks.user_params: false (num_users 0): no per-user variable; a user's own feature ids in the input give
    what its row of the table gives; example_losses (what DP-SGD clips) are the squared errors, worked out."""
    tf.keras.utils.set_random_seed(4)
    users = np.array([[1, 0], [2, 3], [0, 0], [1, 2], [3, 0]], np.int32)
    model = RecommenderModel.built(backbone(), task="ranking", rating_mean=3.0, user_table=users.tolist(),
                                   user_table_size=4, mlp=[8])
    assert model.user_embedding is None and model.user_bias is None and model.user_factor is None
    assert not [v for v in model.variables if "user_id" in v.name or "user_bias" in v.name or "factor" in v.name]
    f = batch(4)
    by_index = model.ratings({k: v for k, v in f.items() if k != RATING})
    given = {k: v for k, v in f.items() if k not in (RATING, USER_INDEX)}
    given[USER_FEATURE_IDS] = users[f[USER_INDEX]]
    np.testing.assert_allclose(model.ratings(given), by_index, rtol=1e-5)
    out = model({k: tf.constant(v) for k, v in f.items()}, training=False)
    losses = model.example_losses(tf.constant(f[RATING]), out, tf.constant([1.0, 0.0, 2.0, 1.0])).numpy()
    np.testing.assert_allclose(losses, (by_index - f[RATING]) ** 2 * [1, 0, 2, 1], rtol=1e-5)
    binary = RecommenderModel.built(backbone(), task="ranking", objective="binary", like_threshold=4.0, mlp=[8])
    logits = binary.ratings({k: v for k, v in f.items() if k != RATING})
    labels = (f[RATING] >= 4).astype(np.float64)
    want = np.log1p(np.exp(-np.abs(logits))) + np.maximum(logits, 0) - logits * labels
    got = binary.example_losses(tf.constant(f[RATING]), binary({k: tf.constant(v) for k, v in f.items()})).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_content_tower_gives_items_with_the_same_content_the_same_vector():
    content = {"feature_table": [[0]] * 3 + [[1 + (i % 3)] for i in range(VOCAB - 3)], "feature_size": 4,
               "numeric_table": [[0.0]] * VOCAB}
    model = RecommenderModel.built(backbone(), task="cold-start", content=content)
    m = model.candidate_matrix()
    np.testing.assert_allclose(m[3], m[6])  # items 3 and 6 both have feature 1
    assert not np.allclose(m[3], m[4])
    with pytest.raises(ValueError, match="content"):
        RecommenderModel(backbone(), task="cold-start")


def test_saved_task_model_reloads_with_the_same_outputs(tmp_path):
    tf.keras.utils.set_random_seed(4)
    args = {"task": "multitask", "rating_mean": 3.5, "num_users": 5, "mlp": [8]}
    model = RecommenderModel.built(backbone(features=True), **args)
    f = {k: v for k, v in batch(3).items() if k != RATING}
    persistence.save(model, str(tmp_path / "m"), "multitask", extra={"task_args": args})
    loaded, config = persistence.load(str(tmp_path / "m"))
    assert config["task"] == "multitask"
    np.testing.assert_allclose(loaded.query_vectors(f), model.query_vectors(f), rtol=1e-6)
    np.testing.assert_allclose(loaded.ratings(f), model.ratings(f), rtol=1e-6)


def test_rating_offsets_worked_by_hand():
    from tfrec.data.task_splits import Examples

    # ratings: user 0 -> item 3: 5, item 4: 3; user 1 -> item 3: 4.  mean = 4
    train = Examples(np.array([0, 0, 1]), np.array([3, 4, 3]), np.zeros(3), np.array([5.0, 3.0, 4.0]), [])
    users, items = task_trainer.rating_offsets(train, 2, 5, 4.0, shrinkage=1.0)
    # item 3: (1 + 0) / (2 + 1) = 1/3; item 4: -1 / (1 + 1) = -0.5
    assert items[3] == pytest.approx(1 / 3, abs=1e-6) and items[4] == pytest.approx(-0.5)
    # user 0: ((1 - 1/3) + (-1 + 0.5)) / (2 + 1) = 1/18; user 1: (0 - 1/3) / 2 = -1/6
    assert users[0] == pytest.approx(1 / 18, abs=1e-6) and users[1] == pytest.approx(-1 / 6, abs=1e-6)


def test_auc_and_rating_metrics_worked_by_hand():
    # positive/negative pairs: .9>.1, .9>.4, .4>.1, .4=.4 (half) -> 3.5 of 4
    assert rating.auc(np.array([1, 0, 1, 0]), np.array([0.9, 0.1, 0.4, 0.4])) == pytest.approx(0.875)
    m = rating.rating_metrics(np.array([3.0, 4.0]), np.array([2.0, 4.0]), "rating", 4.0)
    # errors 1 and 0: RMSE sqrt(1/2), MAE 1/2; variance of [2, 4] is 1 -> R2 = 1 - 0.5 / 1
    assert m["rmse"] == pytest.approx(np.sqrt(0.5)) and m["mae"] == 0.5 and m["r2"] == pytest.approx(0.5)


def test_retrieval_metrics_agree_with_an_argsort_oracle():
    tf.keras.utils.set_random_seed(5)
    from tfrec.data.task_splits import Examples

    model = RecommenderModel.built(backbone(), task="retrieval")
    f = batch(6, seed=9)
    part = Examples(f[USER_INDEX], f[ITEM_INDEX], np.zeros(6), None, [np.zeros(0, np.int32)] * 6)
    candidates = np.arange(3, VOCAB - 2)
    f[ITEM_INDEX] = np.minimum(f[ITEM_INDEX], VOCAB - 3)
    part.items = f[ITEM_INDEX]
    metrics, ranks = task_trainer.retrieval_metrics(model, part, {k: v for k, v in f.items() if k != RATING},
                                                    candidates, exclude_history=False)
    scores = model.query_vectors({k: v for k, v in f.items() if k != RATING}) @ model.candidate_matrix().T
    for row in range(6):
        order = candidates[np.argsort(-scores[row, candidates], kind="stable")]
        assert ranks[row] == int(np.flatnonzero(order == f[ITEM_INDEX][row])[0])
    assert metrics["top_5_accuracy"] == pytest.approx(np.mean(ranks < 5))
