"""Backbones behind one protocol and a registry: the Transformer, GRU, LSTM, and one defined here."""

import numpy as np
import pytest
import tensorflow as tf

from tfrec.contract import ITEM_INDICES, PADDING_MASK, SEQUENCE_OUTPUT
from tfrec.data import inputs
from tfrec.models import backbone_registry, persistence
from tfrec.models.backbone_registry import backbone_from_config, build_backbone, register_backbone
from tfrec.models.tasks import ITEM_HIDDEN, NextItemRecommender

V = 30
SHAPE = dict(vocabulary_size=V, max_len=8, hidden_dim=16, num_layers=1, num_heads=2, intermediate_dim=32,
             dropout=0.0)


def features(ids):
    ids = np.asarray(ids, np.int32)
    return {ITEM_INDICES: ids, PADDING_MASK: ids != 0}


@pytest.mark.parametrize("name", ["gru", "lstm", "causal-transformer"])
def test_left_to_right_backbones_never_read_later_items(name):
    backbone = build_backbone(name, **SHAPE)
    assert backbone.causal and backbone_registry.is_causal(name)
    a = np.array([[0, 0, 5, 6, 7, 8, 9, 1]])
    b = a.copy()
    b[0, 5:] = [20, 21, 22]  # other items from position 5 on
    out_a = backbone(features(a))[SEQUENCE_OUTPUT].numpy()
    out_b = backbone(features(b))[SEQUENCE_OUTPUT].numpy()
    # the real positions before 5 are unchanged (a padding position's output is never read)
    np.testing.assert_allclose(out_a[0, 2:5], out_b[0, 2:5], atol=1e-5)
    assert np.abs(out_a[0, 5:] - out_b[0, 5:]).max() > 1e-4


@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_recurrent_backbones_skip_padding_and_round_trip_through_their_config(name, tmp_path):
    backbone = build_backbone(name, **SHAPE)
    padded = backbone(features([[0, 0, 0, 5, 6, 1]]))[SEQUENCE_OUTPUT].numpy()
    trimmed = backbone(features([[5, 6, 1]]))[SEQUENCE_OUTPUT].numpy()
    np.testing.assert_allclose(padded[0, 3:], trimmed[0], atol=1e-5)  # leading padding changes nothing
    config = backbone.get_config()
    assert config["backbone_type"] == name
    again = backbone_from_config(config)
    assert type(again) is type(backbone) and again.get_config() == config
    # a next-item model on it saves and loads through persistence with the same answers
    model = NextItemRecommender(backbone)
    batch = inputs.with_mask_slot([np.array([5, 6, 7]), np.array([9])], 8)
    persistence.save(model, str(tmp_path / "m"), "next-item")
    loaded, _ = persistence.load(str(tmp_path / "m"))
    np.testing.assert_allclose(loaded.score(batch), model.score(batch), atol=1e-5)
    assert model(features(batch))[ITEM_HIDDEN].shape[1] == batch.shape[1]  # causal: a state per position


def test_a_pretrained_transformer_does_not_seed_a_gru():
    from tfrec.errors import TfrecError

    with pytest.raises(TfrecError, match="has a transformer backbone, but this model has a gru one"):
        persistence.check_compatible(build_backbone("gru", **SHAPE).get_config(),
                                     build_backbone("transformer", **SHAPE).get_config(), "x")
    old = build_backbone("transformer", **SHAPE).get_config()
    old.pop("backbone_type")  # saved before the registry: a transformer
    persistence.check_compatible(build_backbone("transformer", **SHAPE).get_config(), old, "x")
    assert type(backbone_from_config(old)).__name__ == "SequenceBackbone"


def test_unknown_and_duplicate_names_are_refused():
    with pytest.raises(ValueError, match="unknown model.backbone 'nope'; use causal-transformer, gru, lstm"):
        build_backbone("nope", **SHAPE)
    with pytest.raises(ValueError, match="registered already"):
        register_backbone("gru")(type("Other", (), {}))
    assert {"transformer", "causal-transformer", "gru", "lstm"} <= set(backbone_registry.backbone_names())
