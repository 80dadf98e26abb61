"""Parameter-efficient fine-tuning: what trains, that adapters start as the identity, and that a saved model
is a plain model computing what the adapted one computed."""

import numpy as np
import pytest
import tensorflow as tf

from tfrec.errors import TfrecError
from tfrec.models import adapters, persistence
from tfrec.models.backbone_registry import build_backbone
from tfrec.models.sequence_backbone import SequenceBackbone
from tfrec.models.tasks import NextItemRecommender, count_parameters

VOCAB, HIDDEN, FFN, RANK = 30, 16, 32, 2


def model_and_histories(adapter_rank: int = 0):
    tf.keras.utils.set_random_seed(0)
    backbone = SequenceBackbone(VOCAB, max_len=8, hidden_dim=HIDDEN, num_layers=2, num_heads=2,
                                intermediate_dim=FFN, dropout=0.0, adapter_rank=adapter_rank, adapter_alpha=4.0)
    ids = np.random.default_rng(0).integers(2, VOCAB, (6, 8)).astype("int32")
    ids[:, -1] = 1  # the mask slot
    return NextItemRecommender(backbone), ids


def adapted_from_plain():
    """A plain model (the pretrained one) and a model built with adapters that starts from its weights."""
    plain, ids = model_and_histories()
    adapted, _ = model_and_histories(adapter_rank=RANK)
    adapters.copy_backbone(adapted.backbone, plain.backbone)
    adapted.head.set_weights(plain.head.get_weights())
    return plain, adapted, ids


def one_step(model, ids):
    model.compile(optimizer=tf.keras.optimizers.Adam(0.05))
    targets = np.arange(2, 2 + len(ids), dtype="int32")[:, None]
    model.fit({"item_indices": ids, "padding_mask": ids > 0}, targets, epochs=1, verbose=0, batch_size=len(ids))


def test_adapters_train_only_low_rank_updates_and_the_head():
    plain, model, ids = adapted_from_plain()
    before = plain.score(ids)
    added = adapters.set_trainable(model, "adapters")
    # query, value and both feed-forward kernels of each of the two layers
    assert len(added) == 8
    per_layer = 2 * (HIDDEN * RANK + RANK * HIDDEN) + (HIDDEN * RANK + RANK * FFN) + (FFN * RANK + RANK * HIDDEN)
    head = VOCAB + HIDDEN * HIDDEN + 3 * HIDDEN  # output bias, transform kernel and bias, layer norm
    assert count_parameters(model) == 2 * per_layer + head == 974
    np.testing.assert_array_equal(model.score(ids), before)  # B starts at zero: the pretrained function
    frozen = [w.numpy() for w in adapters.base_weights(model.backbone)]
    one_step(model, ids)
    for w, old in zip(adapters.base_weights(model.backbone), frozen):
        np.testing.assert_array_equal(w.numpy(), old)  # the backbone's own weights never move
    assert all(np.abs(a.b.numpy()).max() > 0 for a in added)
    assert np.abs(model.score(ids) - before).max() > 1e-4


def test_a_saved_adapted_model_is_a_plain_model_with_the_same_scores(tmp_path):
    _, model, ids = adapted_from_plain()
    adapters.set_trainable(model, "adapters")
    one_step(model, ids)
    adapted = model.score(ids)
    persistence.save(model, str(tmp_path / "m"), "next-item")
    np.testing.assert_array_equal(model.score(ids), adapted)  # saving left the adapters as they were
    loaded, config = persistence.load(str(tmp_path / "m"))
    assert not adapters.adapter_layers(loaded.backbone) and "adapter" not in str(config["backbone"])
    np.testing.assert_allclose(loaded.score(ids), adapted, rtol=1e-5, atol=1e-5)


def test_head_mode_freezes_the_backbone_and_trains_the_head():
    model, ids = model_and_histories()
    assert adapters.set_trainable(model, "head") == []
    assert count_parameters(model) == VOCAB + HIDDEN * HIDDEN + 3 * HIDDEN
    frozen = [w.numpy() for w in model.backbone.weights]
    head = [w.numpy() for w in model.head.trainable_weights]
    one_step(model, ids)
    assert all(np.array_equal(w.numpy(), old) for w, old in zip(model.backbone.weights, frozen))
    assert any(not np.array_equal(w.numpy(), old) for w, old in zip(model.head.trainable_weights, head))


def test_adapters_need_transformer_layers_and_a_known_mode():
    gru = NextItemRecommender(build_backbone("gru", vocabulary_size=VOCAB, max_len=8, hidden_dim=HIDDEN))
    with pytest.raises(TfrecError, match="has none; use head"):
        adapters.set_trainable(gru, "adapters")
    model, _ = model_and_histories()
    with pytest.raises(TfrecError, match="has none; use head"):
        adapters.set_trainable(model, "adapters")  # a backbone built without adapter_rank
    with pytest.raises(TfrecError, match="unknown finetune.trainable"):
        adapters.set_trainable(model, "some")


def test_the_adapters_are_part_of_the_backbone_and_its_config():
    model, _ = model_and_histories(adapter_rank=RANK)
    config = model.backbone.get_config()
    assert (config["adapter_rank"], config["adapter_alpha"]) == (RANK, 4.0)
    rebuilt = SequenceBackbone.from_config(dict(config, name="again"))
    assert len(adapters.adapter_layers(rebuilt)) == len(adapters.adapter_layers(model.backbone)) == 8
    # the plain backbone's weights, in its own order, are the adapted one's without the adapters'
    plain, _ = model_and_histories()
    assert [tuple(w.shape) for w in adapters.base_weights(model.backbone)] == \
        [tuple(w.shape) for w in plain.backbone.weights]
    assert adapters.plain_config(config) == {k: v for k, v in config.items() if not k.startswith("adapter_")}
