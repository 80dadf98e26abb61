"""Objectives as Task layers (tensorflow-recommenders' ``tfrs.tasks`` shape): states and labels in, a loss out.

A model sums the tasks it was given in ``compute_loss``; each task is a Keras layer without weights of
its own (the weights it scores with, the item head's, are handed to it), so a model's checkpoint is the
same whichever tasks it trains with.  Shapes: ``n`` predicted positions, ``d`` the state width, ``V``
the item vocabulary (reserved ids first).

- :class:`ItemPredictionTask`: the masked (cloze) or next item over the catalogue: full softmax, or a
  sampled softmax with log-q correction.
- :class:`AttributeTask`: the masked item's attributes (multi-label).
- :class:`ContinuationTask`: do two pieces of history belong to one user (the next-sentence analogue).
- :class:`ContrastiveTask`: two dropout views of each state match each other better than the batch's others.
- :class:`DistillationTask`: a teacher's item distribution.
- :class:`TripletTask`: the history's state scores its positive next item above sampled negatives
  (a margin, or InfoNCE).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402


def _weighted_mean(per_row, weight):
    return tf.reduce_sum(per_row * weight) / tf.maximum(tf.reduce_sum(weight), 1.0)


class ItemPredictionTask(tf.keras.layers.Layer):
    """``[n]`` cross-entropy of each position's item: ``call(hidden [n, d], labels [n], head, training)``.

    With ``num_sampled`` and in training: a sampled softmax over ``num_sampled`` items drawn by
    `unigrams` (counts per item id), with the log-q correction and accidental hits removed."""

    def __init__(self, vocabulary_size: int, num_sampled: int = 0, unigrams=None, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size, self.num_sampled = int(vocabulary_size), int(num_sampled)
        self.unigrams = unigrams

    def call(self, hidden, labels, head, training=False):
        if self.num_sampled and training:
            true = tf.cast(labels[:, tf.newaxis], tf.int64)
            sampled = tf.random.fixed_unigram_candidate_sampler(
                true_classes=true, num_true=1, num_sampled=self.num_sampled, unique=True,
                range_max=self.vocabulary_size, unigrams=self.unigrams)
            return tf.nn.sampled_softmax_loss(
                weights=head.item_matrix(), biases=head.output_bias, labels=true, inputs=hidden,
                num_sampled=self.num_sampled, num_classes=self.vocabulary_size, sampled_values=sampled,
                remove_accidental_hits=True)
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=head.project(hidden))

    def get_config(self):
        return dict(super().get_config(), vocabulary_size=self.vocabulary_size, num_sampled=self.num_sampled)


class AttributeTask(tf.keras.layers.Layer):
    """``[n]`` mean sigmoid cross-entropy of each target item's attributes: ``call(logits [n, A - 1],
    items [n])``, the attributes of item ``i`` being the non-zero ids of row ``i`` of `attribute_table`."""

    def __init__(self, attribute_table, attribute_size: int, **kwargs):
        super().__init__(**kwargs)
        self.attribute_table = tf.constant(attribute_table, tf.int32)  # [V, width], 0 = none
        self.attribute_size = int(attribute_size)

    def call(self, logits, items):
        ids = tf.gather(self.attribute_table, items)
        targets = tf.reduce_max(tf.one_hot(ids, self.attribute_size), axis=1)[:, 1:]
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits), axis=-1)


class ContinuationTask(tf.keras.layers.Layer):
    """``(loss, accuracy [b])`` of the continuation logit ``[b]`` against ``continues`` ``[b]`` (1: the
    second piece is the same user's)."""

    def call(self, logit, target):
        target = tf.cast(target, tf.float32)
        loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=logit))
        return loss, tf.cast(tf.equal(logit > 0, target > 0.5), tf.float32)


class ContrastiveTask(tf.keras.layers.Layer):
    """InfoNCE between two views ``[n, d]`` of the same states, both directions, at `temperature`;
    states with the same target item (``targets [n]``) are not counted as each other's negatives."""

    def __init__(self, temperature: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.temperature = float(temperature)

    def call(self, first, second, targets):
        logits = tf.matmul(first, second, transpose_b=True) / self.temperature
        rows = tf.shape(first)[0]
        diagonal = tf.eye(rows, dtype=tf.bool)
        same = tf.equal(targets[:, tf.newaxis], targets[tf.newaxis, :]) & ~diagonal
        logits = tf.where(same, tf.fill(tf.shape(logits), tf.constant(-1e9, logits.dtype)), logits)
        index = tf.range(rows)
        per_row = 0.5 * (tf.nn.sparse_softmax_cross_entropy_with_logits(labels=index, logits=logits)
                         + tf.nn.sparse_softmax_cross_entropy_with_logits(labels=index, logits=tf.transpose(logits)))
        return tf.reduce_sum(per_row) / tf.maximum(tf.cast(rows, per_row.dtype), 1.0)

    def get_config(self):
        return dict(super().get_config(), temperature=self.temperature)


def teacher_cross_entropy(logits, teacher_items, teacher_probs):
    """``[batch]`` cross-entropy of the full softmax over ``logits`` ``[batch, vocabulary_size]``
    against a teacher's ``[batch, k]`` top items and their probabilities."""
    log_q = tf.nn.log_softmax(logits)
    return -tf.reduce_sum(teacher_probs * tf.gather(log_q, teacher_items, batch_dims=1), axis=-1)


class DistillationTask(tf.keras.layers.Layer):
    """Cross-entropy of the model's item distribution (``[b, V]`` logits softened by `temperature`) against
    a teacher's top items and probabilities, weighted by ``weight [b]``, times temperature^2 so its
    gradients keep their scale."""

    def __init__(self, temperature: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.temperature = float(temperature)

    def call(self, logits, teacher_items, teacher_probs, weight):
        t = self.temperature
        return t * t * _weighted_mean(teacher_cross_entropy(logits / t, teacher_items, teacher_probs), weight)

    def get_config(self):
        return dict(super().get_config(), temperature=self.temperature)


class TripletTask(tf.keras.layers.Layer):
    """``[n]`` loss of (history state, positive next item, sampled negatives).

    An item's score is ``h . e_item + b_item`` with the head's item matrix and bias.  ``margin``:
    the mean over negatives of ``max(0, margin - s_pos + s_neg)``; ``infonce``: the cross-entropy of
    the positive among itself and the negatives, scores divided by `temperature`.  Negatives are
    drawn uniformly from the real items (ids ``reserved ..  V - 1``) unless given; one equal to the
    positive is not counted."""

    LOSSES = ("margin", "infonce")

    def __init__(self, loss: str = "margin", margin: float = 1.0, temperature: float = 1.0, num_negatives: int = 8,
                 reserved: int = 3, **kwargs):
        super().__init__(**kwargs)
        if loss not in self.LOSSES:
            raise ValueError(f"unknown triplet loss {loss!r}; use margin or infonce")
        self.loss, self.margin, self.temperature = loss, float(margin), float(temperature)
        self.num_negatives, self.reserved = int(num_negatives), int(reserved)

    def call(self, hidden, positives, item_matrix, bias, negatives=None):
        positives = tf.cast(positives, tf.int32)
        if negatives is None:
            vocabulary = tf.shape(item_matrix)[0]
            negatives = tf.random.uniform([tf.shape(hidden)[0], self.num_negatives], self.reserved, vocabulary,
                                          dtype=tf.int32)
        negatives = tf.cast(negatives, tf.int32)
        pos = tf.reduce_sum(hidden * tf.gather(item_matrix, positives), axis=-1) + tf.gather(bias, positives)
        neg = tf.einsum("nd,nkd->nk", hidden, tf.gather(item_matrix, negatives)) + tf.gather(bias, negatives)
        real = tf.cast(tf.not_equal(negatives, positives[:, tf.newaxis]), hidden.dtype)  # [n, k]
        if self.loss == "margin":
            hinge = tf.nn.relu(self.margin - pos[:, tf.newaxis] + neg) * real
            return tf.reduce_sum(hinge, axis=-1) / tf.maximum(tf.reduce_sum(real, axis=-1), 1.0)
        scores = tf.concat([pos[:, tf.newaxis], tf.where(real > 0, neg, tf.fill(tf.shape(neg), -1e9))], axis=1)
        return tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.zeros_like(positives), logits=scores / self.temperature)

    def get_config(self):
        return dict(super().get_config(), loss=self.loss, margin=self.margin, temperature=self.temperature,
                    num_negatives=self.num_negatives, reserved=self.reserved)
