"""The re-rankers against lists worked out by hand, and the identity when both knobs are 0.

Item indices 0-2 are reserved (scored -inf, as the callers mask them); real items from 3."""

import numpy as np
import pytest
import tensorflow as tf

from tfrec.models import reranking

NEG = -np.inf


def run(scores, vectors, interactions, histories, k, diversity, penalty):
    return reranking.rerank_numpy(np.asarray(scores, np.float32), np.asarray(vectors, np.float32),
                                  np.asarray(interactions), histories, k, diversity, penalty)


def test_both_knobs_at_zero_give_the_models_own_top_k():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(5, 40)).astype(np.float32)
    scores[:, :3] = NEG
    vectors = rng.normal(size=(40, 4))
    got = run(scores, vectors, rng.integers(0, 9, 40), [np.array([5, 6])] * 5, 10, 0.0, 0.0)
    assert got.tolist() == tf.math.top_k(scores, 10).indices.numpy().tolist()


def test_mmr_trades_relevance_for_items_unlike_those_chosen():
    # items 3, 4 point the same way, 5 elsewhere; relevance scaled over the pool: 3 -> 1, 4 -> .5, 5 -> 0
    scores = [[NEG, NEG, NEG, 3.0, 2.0, 1.0]]
    vectors = [[0, 0], [0, 0], [0, 0], [1, 0], [1, 0], [0, 1]]
    assert run(scores, vectors, [0] * 6, [np.array([], np.int32)], 3, 0.0, 0.0).tolist() == [[3, 4, 5]]
    # λ = .5: after 3, item 4 is worth .5 * .5 - .5 * 1 = -.25 and item 5 is worth 0 - .5 * 0 = 0
    assert run(scores, vectors, [0] * 6, [np.array([], np.int32)], 3, 0.5, 0.0).tolist() == [[3, 5, 4]]
    # λ = .2: item 4 is worth .8 * .5 - .2 = .2, item 5 .8 * 0 - 0 = 0: relevance still wins
    assert run(scores, vectors, [0] * 6, [np.array([], np.int32)], 3, 0.2, 0.0).tolist() == [[3, 4, 5]]
    # an excluded item (the history's, scored -inf) is never chosen, however unlike the others it is
    masked = [[NEG, NEG, NEG, 3.0, 2.0, NEG]]
    assert run(masked, vectors, [0] * 6, [np.array([5])], 2, 1.0, 0.0).tolist() == [[3, 4]]


def test_popularity_calibration_moves_items_towards_the_historys_level():
    # levels log(1 + n) / log(101): item 3 -> 1, item 4 -> log 2 / log 101 = .150, item 5 and 6 -> 0
    interactions = [0, 0, 0, 100, 1, 0, 0]
    levels, average = reranking.popularity_levels(interactions)
    assert levels[3] == pytest.approx(1) and levels[4] == pytest.approx(np.log(2) / np.log(101))
    assert average == pytest.approx((100 * 1 + 1 * levels[4]) / 101)
    scores = [[NEG, NEG, NEG, 3.0, 2.0, 1.0, NEG]]  # item 6 is the history's (masked)
    vectors = np.eye(7)
    niche = [np.array([6])]  # the history's level is 0
    # p = 1: item 3: 1 - 1 = 0, item 4: .5 - .150 = .350, item 5: 0 - 0 = 0 (tie with 3: the better-scored first)
    assert run(scores, vectors, interactions, niche, 3, 0.0, 1.0).tolist() == [[4, 3, 5]]
    # a history of the blockbuster (level 1): nothing is above its level, nothing moves
    assert run(scores, vectors, interactions, [np.array([3])], 3, 0.0, 1.0).tolist() == [[3, 4, 5]]
    # a history at item 4's level (.150): only item 3 is above it, 1 - (1 - .150) = .150 drops below
    # item 4's .5 and stays above item 5's 0, which is below the level and keeps it
    assert run(scores, vectors, interactions, [np.array([4])], 3, 0.0, 1.0).tolist() == [[4, 3, 5]]


def test_knobs_apply_per_row_and_scores_stay_the_models():
    scores = np.array([[NEG, NEG, NEG, 3.0, 2.0, 1.0]] * 2, np.float32)
    vectors = np.array([[0, 0], [0, 0], [0, 0], [1, 0], [1, 0], [0, 1]], np.float32)
    levels, average = reranking.popularity_levels(np.zeros(6))
    index, best = reranking.rerank(tf.constant(scores), tf.constant(vectors), tf.constant(levels), average,
                                   tf.zeros([2, 1], tf.int32), tf.zeros([2, 1], tf.bool), 3,
                                   tf.constant([0.0, 0.5]), tf.constant([0.0]))
    assert index.numpy().tolist() == [[3, 4, 5], [3, 5, 4]]
    assert best.numpy().tolist() == [[3.0, 2.0, 1.0], [3.0, 1.0, 2.0]]


@pytest.mark.parametrize("diversity, penalty, message", [(1.5, 0.0, "diversity must be between 0 and 1"),
                                                         (-0.1, 0.0, "diversity must be between 0 and 1"),
                                                         (0.0, -1.0, "popularity_penalty must be at least 0")])
def test_knobs_out_of_range_fail_with_one_sentence(diversity, penalty, message):
    from tfrec.serving.errors import first_line

    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        reranking.rerank(tf.constant([[NEG, NEG, NEG, 1.0]]), tf.ones([4, 2]), tf.zeros([4]), 0.0,
                         tf.zeros([1, 1], tf.int32), tf.zeros([1, 1], tf.bool), 1, tf.constant([diversity]),
                         tf.constant([penalty]))
    assert first_line(caught.value) == message
