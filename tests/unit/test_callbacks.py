"""RankingMetrics: validation figures in the Keras logs, where EarlyStopping and the History read them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tfrec.data import schema
from tfrec.data.inputs import EvalSequences
from tfrec.training.callbacks import RankingMetrics

tf = pytest.importorskip("tensorflow")

VOCAB = 20
# Three users; their held-out items are 10, 11 and 12, and item 5 is in every history (left out of the ranking).
VALID = EvalSequences(np.arange(3, dtype=np.int32), [np.array([5, 6], np.int32), np.array([5], np.int32),
                                                     np.array([7, 8, 5], np.int32)], np.array([10, 11, 12], np.int32))
TARGET_OF = {tuple(h.tolist()): int(t) for h, t in zip(VALID.histories, VALID.targets)}


def tiny_model():
    model = tf.keras.Sequential([tf.keras.Input((1,)), tf.keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def fit(callbacks, epochs):
    x = np.zeros((4, 1), np.float32)
    return tiny_model().fit(x, x, epochs=epochs, batch_size=4, callbacks=callbacks, verbose=0)


class RankOf:
    """A scorer that puts every user's target at a chosen 0-based rank, the next rank of `ranks` per call:
    that many real items score above it, and the history's items score highest of all (they are left out)."""

    def __init__(self, ranks):
        self.ranks, self.calls = list(ranks), 0

    def __call__(self, histories):
        rank = self.ranks[min(self.calls, len(self.ranks) - 1)]
        self.calls += 1
        scores = np.zeros((len(histories), VOCAB), np.float32)
        for row, h in enumerate(histories):
            target = TARGET_OF[tuple(h.tolist())]
            scores[row, h] = 5.0
            scores[row, target] = 1.0
            others = [i for i in range(schema.NUM_ITEM_RESERVED, VOCAB) if i != target and i not in h]
            scores[row, others[:rank]] = 2.0
        return scores


def test_metrics_go_into_the_logs_with_hand_computed_values():
    # Every target ranked 2nd (0-based rank 1): HR@1 = 0, HR@5 = 1, NDCG@10 = 1/log2(3), MRR = 1/2.
    history = fit([RankingMetrics(VALID, scorer=RankOf([1]), verbose=False)], epochs=2)
    assert history.history["val_hr@1"] == [0.0, 0.0]
    assert history.history["val_hr@5"] == [1.0, 1.0]
    assert history.history["val_ndcg@10"] == pytest.approx([1 / math.log2(3)] * 2)
    assert history.history["val_mrr"] == pytest.approx([0.5, 0.5])


def test_early_stopping_reads_them():
    # Rank 0 at epoch 1, then worse every epoch: EarlyStopping(patience=2) stops after epoch 3.
    scorer = RankOf([0, 3, 6, 6, 6, 6])
    stop = tf.keras.callbacks.EarlyStopping("val_ndcg@10", mode="max", patience=2)
    history = fit([RankingMetrics(VALID, scorer=scorer, verbose=False), stop], epochs=6)
    assert len(history.history["loss"]) == 3 and scorer.calls == 3
    assert history.history["val_ndcg@10"][0] == pytest.approx(1.0)


def test_every_and_the_last_epoch():
    scorer = RankOf([0])
    callback = RankingMetrics(VALID, scorer=scorer, every=2, verbose=False)
    logs = []
    fit([callback, tf.keras.callbacks.LambdaCallback(on_epoch_end=lambda e, l: logs.append(dict(l)))], epochs=5)
    validated = [i + 1 for i, entry in enumerate(logs) if "val_ndcg@10" in entry]
    assert validated == [2, 4, 5] and scorer.calls == 3


def test_scores_a_keras_model_by_default():
    """Without a scorer it ranks with the model's own ``score`` at a mask slot after each history."""
    from tfrec.models.backbone_registry import build_backbone
    from tfrec.models.tasks import NextItemRecommender

    backbone = build_backbone("gru", vocabulary_size=VOCAB, max_len=4, hidden_dim=8, num_layers=1)
    model = NextItemRecommender(backbone)
    model.compile(optimizer="adam")
    callback = RankingMetrics(VALID, max_len=4, verbose=False)
    callback.set_model(model)
    callback.set_params({"epochs": 1})
    logs = {}
    callback.on_epoch_end(0, logs)
    from tfrec.evaluation import ranking

    expected, _ = ranking.evaluate(ranking.model_scorer(model, 4), VALID.histories, VALID.targets)
    assert logs["val_ndcg@10"] == pytest.approx(expected["ndcg@10"])
    assert 0.0 <= logs["val_hr@10"] <= 1.0
