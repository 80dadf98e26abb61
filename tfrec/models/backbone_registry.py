"""Backbones by name: ``model.backbone: transformer | causal-transformer | gru | lstm`` or any registered name.

A backbone is a Keras model that maps ``{item_indices, padding_mask}`` (``[batch, seq_len]``, left-padded,
0 = padding) to ``{sequence_output: [batch, seq_len, hidden_dim]}`` and offers what the heads and towers
read (the protocol, kept by every backbone here):

- ``token_embedding``: a keras-nlp ``ReversibleEmbedding`` of the items (heads tie their weights to it);
- ``feature_embedding`` (or None), ``output_item_embeddings()``: the matrix heads score against;
- ``vocabulary_size``, ``max_len``, ``hidden_dim``, ``causal`` (each position sees only the ones before
  it), ``output_features``, ``output_extra_dim``, ``output_last_item``;
- ``get_config()`` holding ``backbone_type`` (its registry name) and every constructor argument, and
  ``from_config``.

A new backbone is one file: a class with that protocol, registered with :func:`register_backbone`.
Every constructor takes the same keyword arguments (:data:`SHAPE_ARGUMENTS` and the head options), so
the trainers build any of them from a run config; a backbone ignores the ones it has no use for.
"""

from __future__ import annotations

from typing import Callable

TRANSFORMER = "transformer"
CAUSAL_TRANSFORMER = "causal-transformer"
# What every backbone constructor is given (it may ignore some: a GRU has no attention heads).
SHAPE_ARGUMENTS = ("vocabulary_size", "max_len", "hidden_dim", "num_layers", "num_heads", "intermediate_dim",
                   "dropout")

_BACKBONES: dict[str, tuple[Callable, bool]] = {}


class BackboneMixin:
    """What the backbones tfrec ships have in common: the matrix heads score against, and rebuilding from
    a config that names its ``backbone_type``."""

    def output_item_embeddings(self):
        """The ``[vocabulary_size, hidden_dim]`` matrix heads score hidden states against: the item
        embedding, plus the pooled feature embedding when the heads score with features."""
        if self.output_features:
            return self.token_embedding.embeddings + self.feature_embedding.all_items()
        return self.token_embedding.embeddings

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("backbone_type", None)
        return cls(**config)


def register_backbone(name: str, causal: bool = False):
    """Class decorator: `cls` becomes the backbone ``model.backbone: name``.

    `causal`: it reads histories left to right only (recurrent, causal attention), so next-item
    fine-tuning trains every position (``finetune.examples: causal``)."""
    def decorate(cls):
        if name in _BACKBONES and _BACKBONES[name][0] is not cls:
            raise ValueError(f"a backbone named {name!r} is registered already")
        _BACKBONES[name] = (cls, causal)
        if getattr(cls, "backbone_type", None) is None:
            cls.backbone_type = name
        return cls
    return decorate


def _load_builtin() -> None:
    # The backbones tfrec ships register themselves on import.
    from tfrec.models import gru_backbone, lstm_backbone, sequence_backbone  # noqa: F401


def backbone_names() -> list[str]:
    _load_builtin()
    return sorted(_BACKBONES)


def is_causal(name: str) -> bool:
    _load_builtin()
    return _entry(name)[1]


def _entry(name: str):
    if name not in _BACKBONES:
        raise ValueError(f"unknown model.backbone {name!r}; use {', '.join(sorted(_BACKBONES))} "
                         "(or register one with tfrec.models.backbone_registry.register_backbone)")
    return _BACKBONES[name]


def build_backbone(name: str, **kwargs):
    """A new backbone ``name`` with the common constructor arguments."""
    _load_builtin()
    cls, causal = _entry(name)
    if causal:
        kwargs["causal"] = True
    return cls(**kwargs)


def backbone_from_config(config: dict):
    """Rebuilds a backbone from its ``get_config()`` (a config without ``backbone_type`` is a transformer's,
    as every backbone saved before the registry was)."""
    _load_builtin()
    config = dict(config)
    name = config.pop("backbone_type", TRANSFORMER)
    return _entry(name)[0].from_config(config)
