"""Parameter-efficient fine-tuning: a frozen backbone with a trained head, or low-rank adapters (LoRA).

``finetune.trainable`` picks what a fine-tuning trains:

- ``all`` (default): every weight;
- ``head``: the backbone (item embedding, positions, encoder) is frozen and the task's own weights train
  (the next-item head's transform and bias, or the TFRS towers and rating network);
- ``adapters``: the backbone is frozen except a low-rank update ``W + (alpha / rank) A B`` of the query and
  value projections and of both feed-forward layers of every Transformer layer (Hu et al., "LoRA", 2021),
  with ``B`` started at zero so the first step computes exactly the pretrained function; the head trains.

A small task then cannot overwrite what pretraining learnt, and trains a few per cent of the weights.
The adapters are merged into the kernels whenever the model is saved (:func:`merged`, called by
:func:`tfrec.models.persistence.save`), so a saved or exported model is a plain backbone of the same shape:
core ops only, no adapter in the serving graph, loadable by anything that loads the backbone.
"""

from __future__ import annotations

import contextlib
import math
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402

from tfrec.contract import TRAINABLE  # noqa: E402
from tfrec.errors import TfrecError  # noqa: E402


class LowRankAdapter(tf.keras.layers.Layer):
    """A low-rank update of one dense layer's kernel: ``A`` ``[fan_in, rank]`` and ``B`` ``[rank, fan_out]``,
    the kernel read as ``[fan_in, fan_out]`` (an ``EinsumDense`` query/value kernel ``[hidden, heads,
    head_dim]`` is ``[hidden, heads x head_dim]``).  :meth:`install` makes the layer compute with
    ``kernel + delta``."""

    def __init__(self, target: tf.keras.layers.Layer, rank: int, alpha: float, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.target = target
        self.rank, self.scale = int(rank), float(alpha) / int(rank)
        shape = target.kernel.shape
        self.fan_in, self.fan_out = int(shape[0]), int(math.prod(shape[1:]))
        limit = 1.0 / math.sqrt(self.fan_in)
        self.a = self.add_weight("lora_a", shape=(self.fan_in, self.rank), trainable=True,
                                 initializer=tf.keras.initializers.RandomUniform(-limit, limit, seed=seed))
        self.b = self.add_weight("lora_b", shape=(self.rank, self.fan_out), trainable=True, initializer="zeros")

    def delta(self) -> tf.Tensor:
        update = tf.matmul(self.a, self.b) * self.scale
        return tf.reshape(tf.cast(update, self.target.kernel.dtype), self.target.kernel.shape)

    def install(self) -> None:
        """Replaces the target layer's call by the same computation on ``kernel + delta``."""
        layer, adapter = self.target, self
        if isinstance(layer, tf.keras.layers.EinsumDense):
            def call(inputs):
                out = tf.einsum(layer.equation, inputs, layer.kernel + adapter.delta())
                out = out + layer.bias if layer.bias is not None else out
                return layer.activation(out) if layer.activation is not None else out
        elif isinstance(layer, tf.keras.layers.Dense):
            def call(inputs):
                out = tf.einsum("...i,io->...o", tf.cast(inputs, layer.compute_dtype), layer.kernel + adapter.delta())
                out = tf.nn.bias_add(out, layer.bias) if layer.use_bias else out
                return layer.activation(out) if layer.activation is not None else out
        else:
            raise TypeError(f"no low-rank adapter for a {type(layer).__name__}")
        layer.call = call


def _targets(backbone) -> list:
    """The dense layers adapters go on: query, value and both feed-forward layers of each encoder layer."""
    import keras_nlp

    out = []
    for layer in backbone.layers:
        if isinstance(layer, keras_nlp.layers.TransformerEncoder):
            attention = layer._self_attention_layer
            out += [attention._query_dense, attention._value_dense, layer._feedforward_intermediate_dense,
                    layer._feedforward_output_dense]
    return out


def apply(model, trainable: str, rank: int = 8, alpha: float = 16.0, seed: int = 0) -> list:
    """Sets what `model` (a task model with a ``backbone``, weights already loaded) trains; call it inside
    the strategy's scope, before ``compile``.  Returns the adapters (empty unless ``adapters``)."""
    if trainable not in TRAINABLE:
        raise TfrecError(f"unknown finetune.trainable {trainable!r}; use {' or '.join(TRAINABLE)}")
    if trainable == "all":
        return []
    backbone = model.backbone
    targets = _targets(backbone) if trainable == "adapters" else []
    if trainable == "adapters" and not targets:
        raise TfrecError(f"finetune.trainable adapters puts low-rank adapters on Transformer layers, and this "
                         f"{type(backbone).__name__} has none; use head (frozen backbone) or all")
    backbone.trainable = False
    adapters = [LowRankAdapter(t, rank, alpha, seed=seed + i, name=f"lora_{i}") for i, t in enumerate(targets)]
    for adapter in adapters:
        adapter.install()
    model.adapters = adapters  # tracked by the model: trained, backed up and restored with it
    if hasattr(model, "_score_fn"):  # a scoring function traced before the adapters computes without them
        del model._score_fn
    return adapters


@contextlib.contextmanager
def merged(model):
    """Within the block the adapters' updates are in the kernels and the adapters are zero, so the model
    computes the same function with plain kernels (what :func:`tfrec.models.persistence.save` writes);
    afterwards the kernels and adapters are as before."""
    adapters = list(getattr(model, "adapters", None) or [])
    kept = [(a.target.kernel.read_value(), a.b.read_value()) for a in adapters]
    try:
        for a in adapters:
            a.target.kernel.assign(a.target.kernel + a.delta())
            a.b.assign(tf.zeros_like(a.b))
        yield
    finally:
        for a, (kernel, b) in zip(adapters, kept):
            a.target.kernel.assign(kernel)
            a.b.assign(b)
