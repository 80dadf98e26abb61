"""Parameter-efficient fine-tuning: a frozen backbone with a trained head, or low-rank adapters (LoRA).

``finetune.trainable`` picks what a fine-tuning trains:

- ``all`` (default): every weight;
- ``head``: the backbone (item embedding, positions, encoder) is frozen and the task's own weights train
  (the next-item head's transform and bias, or the TFRS towers and rating network);
- ``adapters``: the backbone is built with ``adapter_rank`` (:class:`LowRankEncoder` layers) and frozen
  except a low-rank update ``W + (alpha / rank) A B`` of the query and value projections and of both
  feed-forward layers of every Transformer layer (Hu et al., "LoRA", 2021), with ``B`` started at zero so
  the first step computes exactly the pretrained function; the head trains.

A small task then cannot overwrite what pretraining learnt, and trains a few per cent of the weights.
The adapters are merged into the kernels whenever the model is saved (:func:`merged` and :func:`plain_config`,
called by :func:`tfrec.models.persistence.save`), so a saved or exported model is a plain backbone of the same shape:
core ops only, no adapter in the serving graph, loadable by anything that loads the backbone.
"""

from __future__ import annotations

import contextlib
import math
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import keras_nlp  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfrec.contract import TRAINABLE  # noqa: E402
from tfrec.models.backbone_registry import CAUSAL_TRANSFORMER, TRANSFORMER  # noqa: E402
from tfrec.errors import TfrecError  # noqa: E402


ADAPTED = (TRANSFORMER, CAUSAL_TRANSFORMER)  # the backbones built with adapters (model.backbone)


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


class LowRankEncoder(keras_nlp.layers.TransformerEncoder):
    """A keras-nlp ``TransformerEncoder`` whose query, value and both feed-forward projections compute with
    ``kernel + (adapter_alpha / adapter_rank) A B`` (:class:`LowRankAdapter`), the adapters made by the
    layer's own ``build``: what a backbone built with ``adapter_rank > 0`` stacks.  Its variables carry the
    plain encoder's checkpoint keys, the adapters' on top, so a plain encoder's weights load into it and its
    folded weights (:func:`merged`) load into a plain one.

    The projections are read by their keras-nlp 0.12 attribute names (``_self_attention_layer._query_dense``
    and the like): tests/unit/test_adapters.py fails at once if a keras-nlp release renames them."""

    def __init__(self, adapter_rank: int, adapter_alpha: float = 16.0, adapter_seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if int(adapter_rank) < 1:
            raise ValueError(f"adapter_rank must be at least 1, got {adapter_rank}")
        self.adapter_rank, self.adapter_alpha, self.adapter_seed = int(adapter_rank), float(adapter_alpha), int(adapter_seed)
        self.low_rank = []

    def build(self, inputs_shape):
        super().build(inputs_shape)
        attention = self._self_attention_layer
        for projection in (attention._query_dense, attention._value_dense):
            if not projection.built:  # Keras builds the attention's projections at their first call
                projection.build(inputs_shape)
        targets = [attention._query_dense, attention._value_dense, self._feedforward_intermediate_dense,
                   self._feedforward_output_dense]
        self.low_rank = [LowRankAdapter(t, self.adapter_rank, self.adapter_alpha, seed=self.adapter_seed + i,
                                        name=f"lora_{i}") for i, t in enumerate(targets)]
        for adapter in self.low_rank:
            adapter.install()

    def freeze_base(self) -> None:
        """Every weight of the encoder stops training except its adapters'."""
        for layer in (self._self_attention_layer, self._self_attention_layer_norm, self._feedforward_layer_norm,
                      self._feedforward_intermediate_dense, self._feedforward_output_dense):
            layer.trainable = False

    def get_config(self):
        config = super().get_config()
        config.update(adapter_rank=self.adapter_rank, adapter_alpha=self.adapter_alpha,
                      adapter_seed=self.adapter_seed)
        return config


def adapter_layers(backbone) -> list:
    """The :class:`LowRankAdapter` layers of `backbone` (none for a plain one)."""
    return [a for layer in backbone.layers if isinstance(layer, LowRankEncoder) for a in layer.low_rank]


def base_weights(backbone) -> list:
    """`backbone`'s weights without its adapters', in the order a plain backbone of the same shape lists
    its own: what a pretrained backbone's weights copy into."""
    extra = {id(w) for a in adapter_layers(backbone) for w in (a.a, a.b)}  # not the kernels they adapt
    return [w for w in backbone.weights if id(w) not in extra]


def copy_backbone(target, source) -> None:
    """Copies the weights of `source` (a backbone of the same shape) into `target`, which may carry
    adapters (they keep their own start)."""
    mine, theirs = base_weights(target), source.weights
    if len(mine) != len(theirs):
        raise TfrecError(f"the pretrained backbone has {len(theirs)} weights and this one {len(mine)}")
    for a, b in zip(mine, theirs):
        a.assign(b)


def set_trainable(model, trainable: str) -> list:
    """Sets what `model` (a task model with a ``backbone``, weights loaded) trains, before ``compile``:
    ``all``; ``head`` (the backbone frozen); ``adapters`` (the backbone, built with ``adapter_rank``,
    frozen except its adapters).  Returns the adapters that train."""
    if trainable not in TRAINABLE:
        raise TfrecError(f"unknown finetune.trainable {trainable!r}; use {' or '.join(TRAINABLE)}")
    backbone = model.backbone
    found = adapter_layers(backbone)
    if trainable == "adapters" and not found:
        raise TfrecError(f"finetune.trainable adapters puts low-rank adapters on Transformer layers, and this "
                         f"{type(backbone).__name__} has none; use head (frozen backbone) or all")
    if trainable == "all":
        return []
    if trainable == "head":
        backbone.trainable = False
        return []
    for layer in backbone.layers:
        if isinstance(layer, LowRankEncoder):
            layer.freeze_base()
        else:
            layer.trainable = False
    return found


def plain_config(config: dict) -> dict:
    """A backbone config with its adapters folded away: what a saved model records (:func:`merged`)."""
    return {k: v for k, v in config.items() if k not in ("adapter_rank", "adapter_alpha")}


@contextlib.contextmanager
def merged(model):
    """Within the block the adapters' updates are in the kernels and the adapters are zero, so the model
    computes the same function with plain kernels (what :func:`tfrec.models.persistence.save` writes);
    afterwards the kernels and adapters are as before."""
    adapters = adapter_layers(model.backbone) if hasattr(model, "backbone") else []
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
