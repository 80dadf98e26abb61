"""Seeded masked-item selection built on keras-nlp's ``MaskedLMMaskGenerator``."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import keras_nlp  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_text as tf_text  # noqa: E402


class SeededItemSelector(tf_text.RandomItemSelector):
    """A vectorised ``RandomItemSelector`` whose choice follows an explicit seed.

    The stock selector shuffles each row in a ``map_fn`` with TensorFlow's stateful
    generator: slow on short rows and different on every run under a parallel
    ``tf.data`` map.  This one draws one stateless random key per position for the
    whole batch and selects, per row, the ``min(ceil(rate * n), max)`` selectable
    positions with the largest keys: the same distribution, in a few batched ops.
    """

    seed: tf.Tensor | None = None

    def get_selection_mask(self, input_ids, axis=1):
        if axis != 1 or input_ids.ragged_rank != 1:
            raise ValueError("SeededItemSelector selects along axis 1 of a [batch, (items)] ragged tensor")
        selectable = self.get_selectable(input_ids, axis)
        dense = selectable.to_tensor(default_value=False)
        seed = self.seed if self.seed is not None else tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int64)
        keys = tf.random.stateless_uniform(tf.shape(dense), seed=seed)
        keys = tf.where(dense, keys, -1.0)
        count = tf.reduce_sum(tf.cast(dense, tf.float32), axis=1)
        quota = tf.minimum(tf.math.ceil(count * self.selection_rate), float(self.max_selections_per_batch))
        rank = tf.argsort(tf.argsort(keys, axis=1, direction="DESCENDING", stable=True), axis=1, stable=True)
        chosen = dense & (tf.cast(rank, tf.float32) < quota[:, tf.newaxis])
        return tf.RaggedTensor.from_tensor(chosen, lengths=input_ids.row_lengths())


class SeededMaskGenerator(keras_nlp.layers.MaskedLMMaskGenerator):
    """keras-nlp's ``MaskedLMMaskGenerator`` with a seeded, vectorised position selection.

    Everything else (value choice, padding to ``mask_selection_length``, output
    keys) is the stock layer.  Masked items are always replaced by the mask id
    (``mask_token_rate=1``), the cloze objective of BERT4Rec; with that rate the
    output depends on the seed alone.

    Call with ``inputs`` ``[batch, seq_len]`` int32 (0 = padding) and ``seed`` an int64
    ``[2]`` tensor; returns ``token_ids``, ``mask_positions``, ``mask_ids``, ``mask_weights``.
    """

    def __init__(self, *args, mask_token_rate: float = 1.0, random_token_rate: float = 0.0, **kwargs):
        super().__init__(*args, mask_token_rate=mask_token_rate, random_token_rate=random_token_rate, **kwargs)
        stock = self._random_selector
        self._random_selector = SeededItemSelector(
            max_selections_per_batch=stock.max_selections_per_batch,
            selection_rate=stock.selection_rate,
            unselectable_ids=stock.unselectable_ids,
        )

    def call(self, inputs, seed=None):
        self._random_selector.seed = None if seed is None else tf.cast(seed, tf.int64)
        try:
            return super().call(inputs)
        finally:
            self._random_selector.seed = None
