"""Heads on the sequence backbone: masked-item pretraining and next-item recommendation.

Both task models output the head's hidden state at the positions they predict
(``item_hidden`` ``[batch, positions, hidden_dim]``); the item logits are that state
times the item embedding (tied; plus each item's pooled feature embedding when the
backbone has ``output_features``) plus a bias, computed in :meth:`compute_loss` (full
softmax, or sampled softmax with log-q correction) and in :meth:`score`.  Keeping the
logits out of the forward pass is what lets the sampled loss skip the full
``[batch, vocabulary]`` product.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfrec.contract import (ATTRIBUTE_LOGITS, CONTINUATION_LOGIT, CONTINUES, ITEM_HIDDEN,  # noqa: E402
                            ITEM_INDICES, ITEMS, MASK_POSITIONS, PADDING_MASK, SEQUENCE_OUTPUT, TEACHER_ITEMS,
                            TEACHER_PROBS)
from tfrec.data import schema  # noqa: E402
from tfrec.data.inputs import leading_padding  # noqa: E402
from tfrec.models.objectives import (AttributeTask, ContinuationTask, ContrastiveTask,  # noqa: E402,F401
                                     DistillationTask, ItemPredictionTask, TripletTask, teacher_cross_entropy)
from tfrec.models.sequence_backbone import SequenceBackbone  # noqa: E402
from tfrec.models.item_head import ItemHead, copy_head_weights, item_head  # noqa: E402,F401

__all__ = ["ItemHead", "MaskedItemPretrainer", "NextItemRecommender", "copy_head_weights", "count_parameters",
           "item_head", "score_in_batches", "teacher_cross_entropy", "trim_leading_padding"]


def _sequence_inputs(backbone: SequenceBackbone) -> dict:
    """Keras inputs ``item_ids`` and ``padding_mask`` ``[batch, seq_len <= max_len]`` of the backbone."""
    return {
        ITEM_INDICES: tf.keras.Input(shape=(None,), dtype="int32", name=ITEM_INDICES),
        PADDING_MASK: tf.keras.Input(shape=(None,), dtype="bool", name=PADDING_MASK),
    }


def count_parameters(model: tf.keras.Model) -> int:
    """Trainable parameters (metric state and constants excluded)."""
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def trim_leading_padding(item_ids):
    """Drops the leading columns that are padding in every row of a left-padded batch."""
    return item_ids[:, leading_padding(item_ids):]


class _ItemPredictionModel(tf.keras.Model):
    """Shared loss, metrics and scoring of the task models.

    Labels are a dict with ``items`` ``[batch, positions]`` (and ``continues`` ``[batch]``
    for the continuation objective); sample weights ``[batch, positions]`` are 0 for
    padding slots.  ``num_sampled > 0`` switches the item loss to a sampled softmax whose
    negatives follow `item_counts` (unigram), with the log-q correction and accidental
    hits removed.
    """

    def _setup(self, backbone, head, num_sampled=0, item_counts=None, attribute_table=None,
               attribute_size=0, attribute_weight=0.0, continuation_weight=0.0, contrastive_weight=0.0,
               contrastive_temperature=1.0, distill_weight=0.0, distill_temperature=1.0, triplet_weight=0.0,
               triplet_loss="margin", triplet_margin=1.0, triplet_negatives=8):
        self.backbone = backbone
        self.triplet_weight = float(triplet_weight)
        self.distill_weight = float(distill_weight)
        self.distill_temperature = float(distill_temperature)
        self.contrastive_weight = float(contrastive_weight)
        self.contrastive_temperature = float(contrastive_temperature)
        self.head = head
        self.num_sampled = int(num_sampled)
        if self.num_sampled:
            if item_counts is None:
                raise ValueError("a sampled softmax needs item_counts")
            counts = np.asarray(item_counts, np.float64)
            counts[: schema.NUM_ITEM_RESERVED] = 0.0
            self.num_sampled = min(self.num_sampled, int((counts > 0).sum()))
            self._unigrams = counts.tolist()
        self.attribute_weight = float(attribute_weight)
        self.continuation_weight = float(continuation_weight)
        self._attribute_table = None if attribute_table is None else tf.constant(np.asarray(attribute_table, np.int32))
        self._attribute_size = int(attribute_size)
        names = ["loss", "item_loss"]
        if self.attribute_weight:
            names.append("attribute_loss")
        if self.continuation_weight:
            names += ["continuation_loss", "continuation_accuracy"]
        if self.contrastive_weight:
            names.append("contrastive_loss")
        if self.distill_weight:
            names.append("distill_loss")
        if self.triplet_weight:
            names.append("triplet_loss")
        self._trackers = {n: tf.keras.metrics.Mean(name=n) for n in names}
        # The objectives this model sums (tfrec.models.objectives).  Kept out of Keras' tracking: they hold no
        # weights, so checkpoints are the same whichever a model trains with.
        self.__dict__["objectives"] = {
            "item": ItemPredictionTask(backbone.vocabulary_size, self.num_sampled,
                                       self._unigrams if self.num_sampled else None),
            "attribute": AttributeTask(attribute_table, attribute_size) if self.attribute_weight else None,
            "continuation": ContinuationTask(),
            "contrastive": ContrastiveTask(self.contrastive_temperature),
            "distill": DistillationTask(self.distill_temperature),
            "triplet": TripletTask(triplet_loss, triplet_margin, num_negatives=triplet_negatives,
                                   reserved=schema.NUM_ITEM_RESERVED) if self.triplet_weight else None}

    @property
    def metrics(self):
        return list(self._trackers.values())

    def _item_loss(self, hidden, labels, training):
        return self.objectives["item"](hidden, labels, self.head, training=training)

    def example_losses(self, y, y_pred, sample_weight=None):
        """``[batch]``: each example's item loss, averaged over its predicted positions; what differentially
        private training clips example by example (:mod:`tfrec.training.privacy`).  The item objective only:
        the others couple the examples of a batch or are not summed per example here."""
        labels = tf.cast(y[ITEMS] if isinstance(y, dict) else y, tf.int32)
        hidden = y_pred[ITEM_HIDDEN]  # [batch, positions, dim]
        weight = tf.ones_like(labels, tf.float32) if sample_weight is None else tf.cast(sample_weight, tf.float32)
        flat = tf.reshape(hidden, tf.stack([-1, tf.shape(hidden)[-1]]))
        per_position = tf.reshape(self._item_loss(flat, tf.reshape(labels, [-1]), True), tf.shape(labels))
        return tf.reduce_sum(per_position * weight, axis=1) / tf.maximum(tf.reduce_sum(weight, axis=1), 1.0)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None):
        training = getattr(self, "_tfrec_training", True)
        labels = y[ITEMS] if isinstance(y, dict) else y
        hidden = y_pred[ITEM_HIDDEN]
        if sample_weight is None:
            sample_weight = tf.ones_like(labels, tf.float32)
        sample_weight = tf.cast(sample_weight, tf.float32)
        keep = sample_weight > 0
        flat_labels = tf.cast(tf.boolean_mask(labels, keep), tf.int32)
        flat_weight = tf.boolean_mask(sample_weight, keep)
        denominator = tf.maximum(tf.reduce_sum(flat_weight), 1.0)
        distilling = bool(self.distill_weight) and training and isinstance(y, dict) and TEACHER_ITEMS in y
        # The distillation loss reads the last position's logits; with one predicted position per
        # row and a full softmax, the item loss reads the same ones (one projection per step).
        last_logits = self.head.project(hidden[:, -1]) if distilling else None
        if last_logits is not None and not self.num_sampled and hidden.shape[1] == 1:
            per_row = tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.cast(labels[:, -1], tf.int32), logits=last_logits)
            item_loss = tf.reduce_sum(per_row * sample_weight[:, -1]) / denominator
        else:
            flat_hidden = tf.boolean_mask(hidden, keep)
            item_loss = tf.reduce_sum(self._item_loss(flat_hidden, flat_labels, training) * flat_weight) / denominator
        total = item_loss
        self._trackers["item_loss"].update_state(item_loss)
        if self.attribute_weight:
            per_item = self.objectives["attribute"](tf.boolean_mask(y_pred[ATTRIBUTE_LOGITS], keep), flat_labels)
            attribute_loss = tf.reduce_sum(per_item * flat_weight) / denominator
            self._trackers["attribute_loss"].update_state(attribute_loss)
            total += self.attribute_weight * attribute_loss
        if self.continuation_weight:
            continuation_loss, correct = self.objectives["continuation"](y_pred[CONTINUATION_LOGIT][:, 0], y[CONTINUES])
            self._trackers["continuation_loss"].update_state(continuation_loss)
            self._trackers["continuation_accuracy"].update_state(correct)
            total += self.continuation_weight * continuation_loss
        if self.contrastive_weight and training:
            contrastive_loss = self._contrastive_loss(x, hidden, labels, sample_weight)
            self._trackers["contrastive_loss"].update_state(contrastive_loss)
            total += self.contrastive_weight * contrastive_loss
        if distilling:
            distill_loss = self.objectives["distill"](last_logits, y[TEACHER_ITEMS], y[TEACHER_PROBS],
                                                      sample_weight[:, -1])
            self._trackers["distill_loss"].update_state(distill_loss)
            total += self.distill_weight * distill_loss
        if self.triplet_weight and training:
            per_row = self.objectives["triplet"](tf.boolean_mask(hidden, keep), flat_labels, self.head.item_matrix(),
                                                 self.head.output_bias)
            triplet_loss = tf.reduce_sum(per_row * flat_weight) / denominator
            self._trackers["triplet_loss"].update_state(triplet_loss)
            total += self.triplet_weight * triplet_loss
        if self.losses:
            total += tf.add_n(self.losses)
        self._trackers["loss"].update_state(total)
        return total

    def _contrastive_loss(self, x, hidden, labels, sample_weight):
        """Two dropout views of each predicted state should match each other better than the
        batch's other predicted states (InfoNCE, both directions); states with the same target
        item are not counted as negatives.  Every position with a target takes part: one per
        row for a history ending in the mask slot, each item's for a causal backbone."""
        keep = sample_weight > 0
        first = tf.boolean_mask(hidden, keep)
        second = tf.boolean_mask(self(x, training=True)[ITEM_HIDDEN], keep)
        return self.objectives["contrastive"](first, second, tf.boolean_mask(labels, keep))

    def compute_metrics(self, x, y, y_pred, sample_weight):
        return {name: t.result() for name, t in self._trackers.items()}

    def test_step(self, data):
        self._tfrec_training = False
        try:
            return super().test_step(data)
        finally:
            self._tfrec_training = True

    # -- scoring -------------------------------------------------------------------

    def _last_position_hidden(self, item_ids):
        raise NotImplementedError

    def logits(self, item_ids):
        """Item logits ``[batch, vocabulary_size]`` (a tensor) for histories ending in the mask slot."""
        return self.head.project(self._last_position_hidden(item_ids))

    def score(self, item_ids, batch_size: int = 1024) -> np.ndarray:
        """Item logits ``[n, vocabulary_size]`` for left-padded histories ending in the mask slot."""
        return score_in_batches(self, item_ids, batch_size)


def score_in_batches(model, item_ids, batch_size: int = 1024) -> np.ndarray:
    """``model.logits`` as a ``[n, vocabulary_size]`` array for left-padded histories ending in
    the mask slot, a batch at a time, each batch trimmed to its longest row."""
    if not hasattr(model, "_score_fn"):
        @tf.function(reduce_retracing=True)
        def score_fn(ids):
            return model.logits(trim_leading_padding(ids))
        model._score_fn = score_fn
    item_ids = np.asarray(item_ids, np.int32)
    out = [model._score_fn(tf.constant(item_ids[i:i + batch_size])).numpy() for i in range(0, len(item_ids), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, model.backbone.vocabulary_size), np.float32)


class MaskedItemPretrainer(_ItemPredictionModel):
    """The cloze objective (BERT4Rec): predict masked items from both sides.

    Inputs: ``item_ids`` ``[batch, seq_len]`` (masked), ``padding_mask``, and
    ``mask_positions`` ``[batch, max_masks]`` int64.  Outputs: ``item_hidden``
    ``[batch, max_masks, hidden_dim]`` from a ``MaskedLMHead`` tied to the item embedding
    (logits over the whole catalogue via ``head.project``), plus, when enabled:

    - ``attribute_logits`` ``[batch, max_masks, attributes]``: the masked item's
      attributes predicted from its contextual state (`attribute_table` holds each
      item's attribute ids, 0 = none, in an id space of `attribute_size`);
    - ``continuation_logit`` ``[batch, 1]``: whether the newer half of the sequence
      continues its older half for the same user (labels from
      :func:`tfrec.data.inputs.masked_item_dataset` with ``continuation_rate``).

    Train with ``model.fit`` on :func:`tfrec.data.inputs.masked_item_dataset`.
    """

    def __init__(self, backbone: SequenceBackbone, num_sampled: int = 0, item_counts=None, attribute_table=None,
                 attribute_size: int = 0, attribute_weight: float = 0.0, continuation_weight: float = 0.0, **kwargs):
        inputs = _sequence_inputs(backbone)
        inputs[MASK_POSITIONS] = tf.keras.Input(shape=(None,), dtype="int64", name=MASK_POSITIONS)
        sequence = backbone({ITEM_INDICES: inputs[ITEM_INDICES], PADDING_MASK: inputs[PADDING_MASK]})[SEQUENCE_OUTPUT]
        head = item_head(backbone)
        hidden = head(sequence, mask_positions=inputs[MASK_POSITIONS])
        outputs = {ITEM_HIDDEN: hidden}
        if attribute_weight:
            if attribute_table is None or attribute_size < 2:
                raise ValueError("the attribute objective needs an attribute table")
            outputs[ATTRIBUTE_LOGITS] = tf.keras.layers.Dense(attribute_size - 1, name="attribute_head")(hidden)
        if continuation_weight:
            mask = tf.keras.layers.Lambda(lambda m: tf.cast(m, sequence.dtype)[..., tf.newaxis], name="pool_mask")(
                inputs[PADDING_MASK])
            pooled = tf.keras.layers.Lambda(
                lambda t: tf.reduce_sum(t[0] * t[1], axis=1) / tf.maximum(tf.reduce_sum(t[1], axis=1), 1.0),
                name="mean_pool")([sequence, mask])
            pooled = tf.keras.layers.Dense(backbone.hidden_dim, activation="tanh", name="continuation_pooler")(pooled)
            outputs[CONTINUATION_LOGIT] = tf.keras.layers.Dense(1, name="continuation_head")(pooled)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self._setup(backbone, head, num_sampled, item_counts, attribute_table, attribute_size,
                    attribute_weight, continuation_weight)

    def _last_position_hidden(self, item_ids):
        batch, width = tf.shape(item_ids)[0], tf.shape(item_ids)[1]
        positions = tf.fill([batch, 1], tf.cast(width - 1, tf.int64))
        features = {ITEM_INDICES: item_ids, PADDING_MASK: item_ids != schema.PAD_ID, MASK_POSITIONS: positions}
        return self(features, training=False)[ITEM_HIDDEN][:, 0]


class NextItemRecommender(_ItemPredictionModel):
    """Next-item prediction: the history ends in a mask slot; predict the item there.

    Inputs: ``item_ids`` ``[batch, seq_len]`` whose last position is the mask id, and
    ``padding_mask``.  Output: ``item_hidden`` ``[batch, 1, hidden_dim]``;
    :meth:`score` gives logits ``[batch, vocabulary_size]``.  Start from a pretrained
    backbone (its weights, and the pretrained head's, carried over) or a fresh one.
    """

    def __init__(self, backbone: SequenceBackbone, num_sampled: int = 0, item_counts=None,
                 contrastive_weight: float = 0.0, contrastive_temperature: float = 1.0, distill_weight: float = 0.0,
                 distill_temperature: float = 1.0, triplet_weight: float = 0.0, triplet_loss: str = "margin",
                 triplet_margin: float = 1.0, triplet_negatives: int = 8, **kwargs):
        inputs = _sequence_inputs(backbone)
        sequence = backbone(inputs)[SEQUENCE_OUTPUT]
        if backbone.causal:
            # Every item's state predicts the item after it (the slot has no target in training).
            positions = tf.keras.layers.Lambda(
                lambda ids: tf.tile(tf.range(tf.shape(ids, out_type=tf.int64)[1])[tf.newaxis], [tf.shape(ids)[0], 1]),
                name="all_positions")(inputs[ITEM_INDICES])
        else:
            positions = tf.keras.layers.Lambda(
                lambda ids: tf.fill([tf.shape(ids)[0], 1], tf.cast(tf.shape(ids)[1] - 1, tf.int64)),
                name="slot_position")(inputs[ITEM_INDICES])
        head = item_head(backbone)
        previous = None
        if head.last_item:
            # The item each state follows: a causal state's own position's; the slot's, the
            # history's last item (padding for an empty history or a batch trimmed to the slot).
            previous = tf.keras.layers.Lambda(
                (lambda ids: ids) if backbone.causal else (lambda ids: tf.pad(ids, [[0, 0], [1, 0]])[:, -2:-1]),
                name="previous_items")(inputs[ITEM_INDICES])
        hidden = head(sequence, mask_positions=positions, previous_items=previous)
        super().__init__(inputs=inputs, outputs={ITEM_HIDDEN: hidden}, **kwargs)
        self._setup(backbone, head, num_sampled, item_counts, contrastive_weight=contrastive_weight,
                    contrastive_temperature=contrastive_temperature, distill_weight=distill_weight,
                    distill_temperature=distill_temperature, triplet_weight=triplet_weight, triplet_loss=triplet_loss,
                    triplet_margin=triplet_margin, triplet_negatives=triplet_negatives)

    def _last_position_hidden(self, item_ids):
        hidden = self({ITEM_INDICES: item_ids, PADDING_MASK: item_ids != schema.PAD_ID}, training=False)[ITEM_HIDDEN]
        if not self.backbone.causal:
            return hidden[:, -1]
        # A causal model is read at the history's last item, whose state was trained to predict
        # the item after it; the mask slot's state stands in only for an empty history.
        # One column of padding on the left lets a batch trimmed to the slot alone be read too.
        hidden = tf.pad(hidden, [[0, 0], [1, 0], [0, 0]])
        has_item = tf.pad(item_ids, [[0, 0], [1, 0]])[:, -2] != schema.PAD_ID
        return tf.where(has_item[:, tf.newaxis], hidden[:, -2], hidden[:, -1])
