"""Heads on the sequence backbone: masked-item pretraining and next-item recommendation."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import keras_nlp  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfrec.data import schema  # noqa: E402
from tfrec.data.inputs import ITEM_IDS, MASK_POSITIONS, PADDING_MASK  # noqa: E402
from tfrec.models.sequence_backbone import SEQUENCE_OUTPUT, SequenceBackbone  # noqa: E402

LOGITS = "logits"


def _item_head(backbone: SequenceBackbone, name: str) -> keras_nlp.layers.MaskedLMHead:
    """A ``MaskedLMHead`` whose output projection is the backbone's item embedding."""
    return keras_nlp.layers.MaskedLMHead(
        vocabulary_size=backbone.vocabulary_size, token_embedding=backbone.token_embedding,
        intermediate_activation="gelu", activation=None, name=name)


def _sequence_inputs(backbone: SequenceBackbone) -> dict:
    """Keras inputs ``item_ids`` and ``padding_mask`` ``[batch, max_len]`` of the backbone."""
    return {
        ITEM_IDS: tf.keras.Input(shape=(backbone.max_len,), dtype="int32", name=ITEM_IDS),
        PADDING_MASK: tf.keras.Input(shape=(backbone.max_len,), dtype="bool", name=PADDING_MASK),
    }


class MaskedItemPretrainer(tf.keras.Model):
    """The cloze objective (BERT4Rec): predict masked items from both sides.

    Inputs: ``item_ids`` ``[batch, seq_len]`` (masked), ``padding_mask``, and
    ``mask_positions`` ``[batch, max_masks]`` int64.  Output: logits
    ``[batch, max_masks, vocabulary_size]`` over the whole catalogue, from a
    ``MaskedLMHead`` tied to the item embedding.  Train with the labels and weights
    of :func:`tfrec.data.inputs.masked_item_dataset`.
    """

    def __init__(self, backbone: SequenceBackbone, **kwargs):
        inputs = _sequence_inputs(backbone)
        inputs[MASK_POSITIONS] = tf.keras.Input(shape=(None,), dtype="int64", name=MASK_POSITIONS)
        hidden = backbone({ITEM_IDS: inputs[ITEM_IDS], PADDING_MASK: inputs[PADDING_MASK]})[SEQUENCE_OUTPUT]
        logits = _item_head(backbone, "masked_item_head")(hidden, mask_positions=inputs[MASK_POSITIONS])
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.backbone = backbone


class NextItemRecommender(tf.keras.Model):
    """Next-item prediction: the history ends in a mask slot; predict the item there.

    Inputs: ``item_ids`` ``[batch, seq_len]`` whose last position is the mask id, and
    ``padding_mask``.  Output: logits ``[batch, vocabulary_size]``.  Start from a
    pretrained backbone (its weights carried over) or a fresh one (from scratch).
    """

    def __init__(self, backbone: SequenceBackbone, **kwargs):
        inputs = _sequence_inputs(backbone)
        hidden = backbone(inputs)[SEQUENCE_OUTPUT]
        last = tf.keras.layers.Lambda(lambda h: h[:, -1:, :], name="mask_slot")(hidden)
        positions = tf.keras.layers.Lambda(lambda h: tf.zeros_like(h[:, :, 0], dtype="int64"), name="slot_position")(last)
        logits = _item_head(backbone, "next_item_head")(last, mask_positions=positions)
        logits = tf.keras.layers.Reshape((backbone.vocabulary_size,), name=LOGITS)(logits)
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.backbone = backbone

    def score(self, item_ids, batch_size: int = 512):
        """Logits ``[n, vocabulary_size]`` for histories already ending in the mask slot."""
        return self.predict({ITEM_IDS: item_ids, PADDING_MASK: item_ids != schema.PAD_ID}, batch_size=batch_size, verbose=0)
