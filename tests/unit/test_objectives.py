"""Each objective's loss on small numbers worked out by hand (the arithmetic is in the comments)."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfrec.models.objectives import (AttributeTask, ContinuationTask, ContrastiveTask, DistillationTask,
                                     TripletTask, teacher_cross_entropy)

LN2 = math.log(2.0)


def test_triplet_margin_and_infonce():
    # items (d = 2): e0 = (0, 0) e1 = (1, 0) e2 = (0, 1) e3 = (1, 1); biases 0 except b3 = 0.5
    items = tf.constant([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    bias = tf.constant([0.0, 0.0, 0.0, 0.5])
    hidden = tf.constant([[2.0, 0.0]])  # scores: s1 = 2, s2 = 0, s3 = 2.5
    margin = TripletTask("margin", margin=1.0)
    # positive 1 against negatives 2 and 3: max(0, 1 - 2 + 0) = 0 and max(0, 1 - 2 + 2.5) = 1.5 -> mean 0.75
    assert margin(hidden, tf.constant([1]), items, bias, tf.constant([[2, 3]])).numpy() == pytest.approx([0.75])
    # a negative equal to the positive is not counted: only item 3 -> 1.5
    assert margin(hidden, tf.constant([1]), items, bias, tf.constant([[1, 3]])).numpy() == pytest.approx([1.5])
    infonce = TripletTask("infonce", temperature=1.0)
    # -log(e^2 / (e^2 + e^0 + e^2.5))
    want = -math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(2.5)))
    assert infonce(hidden, tf.constant([1]), items, bias, tf.constant([[2, 3]])).numpy() == pytest.approx([want], rel=1e-5)
    # drawn negatives are real items (ids from `reserved` on)
    tf.random.set_seed(0)
    drawn = TripletTask("margin", num_negatives=50, reserved=2)(hidden, tf.constant([1]), items, bias)
    assert drawn.shape == (1,) and np.isfinite(drawn.numpy()).all()
    with pytest.raises(ValueError, match="unknown triplet loss"):
        TripletTask("hinge")


def test_continuation_attribute_contrastive_and_distillation():
    # continuation: logits 0 and 2 for targets 1 and 0: (ln 2 + ln(1 + e^2)) / 2; accuracy: logit 0 says "no"
    loss, correct = ContinuationTask()(tf.constant([0.0, 2.0]), tf.constant([1, 0]))
    assert loss.numpy() == pytest.approx((LN2 + math.log(1 + math.exp(2))) / 2, rel=1e-6)
    assert correct.numpy().tolist() == [0.0, 0.0]
    # attributes: item 1 has attribute ids {1, 2} of 3 (0 = none); logits 0 everywhere -> ln 2 per attribute
    table = np.array([[0, 0], [1, 2]], np.int32)
    per_item = AttributeTask(table, 3)(tf.zeros([1, 2]), tf.constant([1]))
    assert per_item.numpy() == pytest.approx([LN2])
    # contrastive, two identical orthogonal views at temperature 1: logits [[1, 0], [0, 1]]
    # each row: -log(e / (e + 1)); both directions the same
    views = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    want = -math.log(math.e / (math.e + 1))
    assert ContrastiveTask(1.0)(views, views, tf.constant([5, 6])).numpy() == pytest.approx(want, rel=1e-6)
    # the same target item: the other row is no negative, so each row's loss is -log 1 = 0
    assert ContrastiveTask(1.0)(views, views, tf.constant([5, 5])).numpy() == pytest.approx(0.0, abs=1e-6)
    # distillation: logits 0 over 4 items -> q = 1/4; teacher all on item 2: -log(1/4); temperature 2 -> x 4
    logits = tf.zeros([1, 4])
    assert teacher_cross_entropy(logits, tf.constant([[2]]), tf.constant([[1.0]])).numpy() == \
        pytest.approx([math.log(4)])
    assert DistillationTask(2.0)(logits, tf.constant([[2]]), tf.constant([[1.0]]), tf.constant([1.0])).numpy() == \
        pytest.approx(4 * math.log(4), rel=1e-6)


def test_a_next_item_model_sums_the_triplet_objective_into_its_loss():
    from tfrec.data import inputs
    from tfrec.models.backbone_registry import build_backbone
    from tfrec.models.tasks import NextItemRecommender

    V, L = 30, 8
    rng = np.random.default_rng(0)
    seqs = [rng.integers(3, V, size=rng.integers(2, L + 1)).astype(np.int32) for _ in range(64)]
    x, y = inputs.next_item_examples(seqs, L)
    ds = inputs.next_item_dataset(x, y, batch_size=32, trim=True)
    backbone = build_backbone("transformer", vocabulary_size=V, max_len=L, hidden_dim=16, num_layers=1, num_heads=2,
                              intermediate_dim=32, dropout=0.0)
    model = NextItemRecommender(backbone, triplet_weight=0.5, triplet_loss="infonce", triplet_negatives=4)
    xb, yb, wb = next(iter(ds))
    tf.random.set_seed(1)
    total = float(model.compute_loss(x=xb, y=yb, y_pred=model(xb), sample_weight=wb))
    item = float(model._trackers["item_loss"].result())
    triplet = float(model._trackers["triplet_loss"].result())
    assert triplet > 0 and total == pytest.approx(item + 0.5 * triplet, rel=1e-5)
    model.compile(tf.keras.optimizers.Adam(1e-2))
    history = model.fit(ds, epochs=3, verbose=0).history
    assert history["triplet_loss"][-1] < history["triplet_loss"][0]
