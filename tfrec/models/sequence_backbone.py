"""The Transformer encoder over item sequences that every tfrec task starts from."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import keras_nlp  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfrec.contract import ITEM_INDICES, PADDING_MASK, SEQUENCE_OUTPUT  # noqa: E402
from tfrec.models.adapters import LowRankEncoder  # noqa: E402
from tfrec.models.backbone_registry import (CAUSAL_TRANSFORMER, TRANSFORMER, BackboneMixin,  # noqa: E402
                                            register_backbone)


class ItemFeatureEmbedding(tf.keras.layers.Layer):
    """Mean-pooled embedding of each item's feature ids (genres, categories, attributes).

    Holds a constant ``[vocabulary_size, max_features]`` table of feature ids per
    item (0 = none); maps ``[batch, seq_len]`` item ids to ``[batch, seq_len, dim]``.
    """

    def __init__(self, feature_table, feature_vocabulary_size: int, hidden_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.feature_table = np.asarray(feature_table, dtype=np.int32)
        self.feature_vocabulary_size = int(feature_vocabulary_size)
        self.hidden_dim = int(hidden_dim)
        self.embedding = tf.keras.layers.Embedding(self.feature_vocabulary_size, self.hidden_dim, name="feature_embedding")

    def build(self, input_shape):
        self.table = tf.constant(self.feature_table)
        super().build(input_shape)

    def call(self, item_ids):
        ids = tf.gather(self.table, item_ids)  # [batch, seq_len, max_features]
        present = tf.cast(ids > 0, self.compute_dtype)[..., tf.newaxis]
        summed = tf.reduce_sum(self.embedding(ids) * present, axis=-2)
        return summed / tf.maximum(tf.reduce_sum(present, axis=-2), 1.0)

    def all_items(self):
        """The pooled feature embedding of every item id, ``[vocabulary_size, dim]``."""
        return self(tf.range(tf.shape(self.table)[0])[tf.newaxis])[0]

    def get_config(self):
        config = super().get_config()
        config.update(feature_table=self.feature_table.tolist(), feature_vocabulary_size=self.feature_vocabulary_size,
                      hidden_dim=self.hidden_dim)
        return config


class RightAlignedPositionEmbedding(keras_nlp.layers.PositionEmbedding):
    """``PositionEmbedding`` counted from the right end of left-padded sequences.

    A batch trimmed to its longest row (width ``T <= sequence_length``) gets positions
    ``sequence_length - T .. sequence_length - 1``, the ones those items have in the
    untrimmed batch, so trimming leading padding never changes a real position's output.
    """

    def call(self, inputs):
        return super().call(inputs, start_index=self.sequence_length - tf.shape(inputs)[-2])


def causal_attention_mask(item_ids):
    """``[batch, seq_len, seq_len]`` bool: position ``i`` may attend to positions ``j <= i``."""
    width = tf.shape(item_ids)[1]
    lower = tf.linalg.band_part(tf.ones([width, width], tf.bool), -1, 0)
    return tf.broadcast_to(lower[tf.newaxis], [tf.shape(item_ids)[0], width, width])


def embedded_items(vocabulary_size: int, hidden_dim: int, feature_table=None, feature_vocabulary_size: int = 0):
    """The inputs every backbone takes and its item representation: ``(item_indices, padding_mask,
    token_embedding, feature_embedding or None, x)``, ``x`` ``[batch, seq_len, hidden_dim]`` the item embedding
    (a keras-nlp ``ReversibleEmbedding`` heads tie to) plus the items' pooled feature embedding when given."""
    item_ids = tf.keras.Input(shape=(None,), dtype="int32", name=ITEM_INDICES)
    padding_mask = tf.keras.Input(shape=(None,), dtype="bool", name=PADDING_MASK)
    token_embedding = keras_nlp.layers.ReversibleEmbedding(
        vocabulary_size, hidden_dim, embeddings_initializer=tf.keras.initializers.TruncatedNormal(stddev=0.02),
        name="item_embedding")
    x = token_embedding(item_ids)
    feature_embedding = None
    if feature_table is not None:
        feature_embedding = ItemFeatureEmbedding(feature_table, feature_vocabulary_size, hidden_dim, name="item_features")
        x = x + feature_embedding(item_ids)
    return item_ids, padding_mask, token_embedding, feature_embedding, x


@register_backbone(TRANSFORMER)
class SequenceBackbone(BackboneMixin, tf.keras.Model):
    """Transformer encoder over left-padded item sequences, bidirectional (BERT4Rec-style) or causal
    (SASRec-style): ``model.backbone: transformer`` or ``causal-transformer``.

    Inputs: ``item_ids`` ``[batch, seq_len]`` int32 (0 = padding, 1 = mask) and
    ``padding_mask`` ``[batch, seq_len]`` bool, with ``seq_len <= max_len`` (batches may be
    trimmed to their longest row; positions count from the right end).  Output: ``sequence_output``
    ``[batch, seq_len, hidden_dim]``.  The item embedding is a keras-nlp
    ``ReversibleEmbedding`` so heads can tie their output weights to it.

    Args:
        vocabulary_size: item vocabulary size, reserved ids included.
        max_len: sequence length (position embeddings).
        hidden_dim, num_layers, num_heads, intermediate_dim, dropout: encoder shape.
        feature_table: optional ``[vocabulary_size, max_features]`` feature ids per item;
            their pooled embedding is added to the item embedding.
        feature_vocabulary_size: size of the feature id space of `feature_table`.
        output_features: heads score items against the same sum of item and feature
            embeddings the input uses (not the item embedding alone), so an item seen
            rarely in training borrows its score from its attributes.
        causal: each position attends to itself and the positions before it only, so
            every position's output can be trained to predict the item after it in one
            pass over a sequence (next-item fine-tuning with ``finetune.examples: causal``).
            The weights are those of the bidirectional encoder: a causal backbone starts
            from a bidirectionally pretrained one unchanged.
        output_extra_dim: width of output-only item vectors the item heads score with beside
            the tied ones (0 = none): item logits get ``hidden_dim + output_extra_dim`` dimensions
            instead of ``hidden_dim``.  Those weights live in the heads, so any pretrained
            backbone takes it; the extra part starts at zero, so a head starts where its source's
            left off (:class:`tfrec.models.item_head.ItemHead`).
        output_last_item: next-item heads also add a vector of the history's last item to
            the state they score with (a learnt item-to-item transition term, started at
            zero; vocabulary x state width new weights in the head).
        adapter_rank, adapter_alpha: > 0 builds every encoder layer with low-rank adapters on
            its query, value and feed-forward projections (:class:`tfrec.models.adapters.LowRankEncoder`,
            ``finetune.trainable: adapters``); a saved model has them folded in, rank 0.
    """

    def __init__(
        self,
        vocabulary_size: int,
        max_len: int = 50,
        hidden_dim: int = 64,
        num_layers: int = 2,
        num_heads: int = 2,
        intermediate_dim: int = 256,
        dropout: float = 0.2,
        layer_norm_epsilon: float = 1e-12,
        feature_table=None,
        feature_vocabulary_size: int = 0,
        output_features: bool = False,
        causal: bool = False,
        output_extra_dim: int = 0,
        output_last_item: bool = False,
        adapter_rank: int = 0,
        adapter_alpha: float = 16.0,
        **kwargs,
    ):
        if output_extra_dim < 0:
            raise ValueError(f"output_extra_dim {output_extra_dim} is negative")
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim {hidden_dim} is not divisible by num_heads {num_heads}")
        item_ids, padding_mask, token_embedding, feature_embedding, x = embedded_items(
            vocabulary_size, hidden_dim, feature_table, feature_vocabulary_size)
        x = x + RightAlignedPositionEmbedding(max_len, name="position_embedding")(x)
        x = tf.keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="embeddings_layer_norm")(x)
        x = tf.keras.layers.Dropout(dropout, name="embeddings_dropout")(x)
        attention_mask = tf.keras.layers.Lambda(causal_attention_mask, name="causal_mask")(item_ids) if causal else None
        for i in range(num_layers):
            shape = dict(intermediate_dim=intermediate_dim, num_heads=num_heads, dropout=dropout, activation="gelu",
                         layer_norm_epsilon=layer_norm_epsilon, name=f"transformer_layer_{i}")
            encoder = (LowRankEncoder(adapter_rank, adapter_alpha, adapter_seed=4 * i, **shape) if adapter_rank
                       else keras_nlp.layers.TransformerEncoder(**shape))
            x = encoder(x, padding_mask=padding_mask, attention_mask=attention_mask)
        super().__init__(inputs={ITEM_INDICES: item_ids, PADDING_MASK: padding_mask}, outputs={SEQUENCE_OUTPUT: x}, **kwargs)
        self.vocabulary_size = vocabulary_size
        self.max_len = max_len
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.feature_table = None if feature_table is None else np.asarray(feature_table, np.int32)
        self.feature_vocabulary_size = feature_vocabulary_size
        self.output_features = bool(output_features) and feature_embedding is not None
        self.causal = bool(causal)
        self.output_extra_dim = int(output_extra_dim)
        self.output_last_item = bool(output_last_item)
        self.adapter_rank, self.adapter_alpha = int(adapter_rank), float(adapter_alpha)
        self.token_embedding = token_embedding
        self.feature_embedding = feature_embedding

    def get_config(self):
        return {
            "backbone_type": TRANSFORMER,
            "vocabulary_size": self.vocabulary_size, "max_len": self.max_len, "hidden_dim": self.hidden_dim,
            "num_layers": self.num_layers, "num_heads": self.num_heads, "intermediate_dim": self.intermediate_dim,
            "dropout": self.dropout, "layer_norm_epsilon": self.layer_norm_epsilon,
            "feature_table": None if self.feature_table is None else self.feature_table.tolist(),
            "feature_vocabulary_size": self.feature_vocabulary_size, "output_features": self.output_features,
            "causal": self.causal, "output_extra_dim": self.output_extra_dim,
            "output_last_item": self.output_last_item, "adapter_rank": self.adapter_rank,
            "adapter_alpha": self.adapter_alpha, "name": self.name,
        }


@register_backbone(CAUSAL_TRANSFORMER, causal=True)
class CausalSequenceBackbone(SequenceBackbone):
    """The Transformer with causal attention from the start (pretraining included): ``causal-transformer``.

    Saved as a ``transformer`` with ``causal: true``, which it is."""

    backbone_type = TRANSFORMER
