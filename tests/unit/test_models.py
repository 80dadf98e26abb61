import numpy as np
import pytest
import tensorflow as tf

from tfrec.data import inputs, schema
from tfrec.errors import TfrecError
from tfrec.evaluation import ranking
from tfrec.models import persistence
from tfrec.models.sequence_backbone import SEQUENCE_OUTPUT, SequenceBackbone
from tfrec.models.tasks import MaskedItemPretrainer, NextItemRecommender

V, L = 40, 8


def small_backbone(**kw):
    return SequenceBackbone(V, max_len=L, hidden_dim=16, num_layers=1, num_heads=2, intermediate_dim=32, **kw)


def batch(n=3):
    ids = np.random.default_rng(0).integers(3, V, size=(n, L)).astype(np.int32)
    ids[:, :3] = 0
    return {"item_ids": ids, "padding_mask": ids != 0}


def test_backbone_shapes_and_config_round_trip():
    bb = small_backbone()
    out = bb(batch())[SEQUENCE_OUTPUT]
    assert out.shape == (3, L, 16)
    clone = SequenceBackbone.from_config(bb.get_config())
    assert clone.get_config() == bb.get_config()
    assert clone.count_params() == bb.count_params()


def test_padding_does_not_change_outputs_of_real_positions():
    bb = small_backbone(dropout=0.0)
    b = batch(1)
    ref = bb(b)[SEQUENCE_OUTPUT].numpy()[0, -1]
    b2 = {"item_ids": b["item_ids"].copy(), "padding_mask": b["padding_mask"]}
    b2["item_ids"][0, :3] = 7  # garbage under the padding mask
    np.testing.assert_allclose(bb(b2)[SEQUENCE_OUTPUT].numpy()[0, -1], ref, atol=1e-5)


def test_item_features_change_the_embedding():
    table = np.zeros((V, 2), np.int32)
    table[3:, 0] = np.arange(3, V) % 4 + 1
    bb = small_backbone(feature_table=table, feature_vocabulary_size=6)
    assert bb(batch())[SEQUENCE_OUTPUT].shape == (3, L, 16)
    assert SequenceBackbone.from_config(bb.get_config()).count_params() == bb.count_params()
    assert bb.count_params() == small_backbone().count_params() + 6 * 16


def test_heads_are_tied_to_the_item_embedding():
    bb = small_backbone()
    pre = MaskedItemPretrainer(bb)
    rec = NextItemRecommender(bb)
    b = batch()
    logits = pre(dict(b, mask_positions=np.array([[7, 6]] * 3, np.int64)))
    assert logits.shape == (3, 2, V)
    assert rec(b).shape == (3, V)
    emb = bb.token_embedding.embeddings
    assert any(w is emb for w in pre.trainable_weights) and any(w is emb for w in rec.trainable_weights)
    # no second V x D output matrix: the heads add only their dense, norm and bias
    assert pre.count_params() - bb.count_params() == 16 * 16 + 16 + 2 * 16 + V


def test_save_load_and_pretrained_transfer(tmp_path):
    bb = small_backbone()
    rec = NextItemRecommender(bb)
    b = batch()
    persistence.save(rec, str(tmp_path / "m"), "next-item")
    loaded, config = persistence.load(str(tmp_path / "m"))
    np.testing.assert_allclose(loaded(b).numpy(), rec(b).numpy(), atol=1e-5)
    fresh = small_backbone()
    persistence.load_backbone_weights(fresh, str(tmp_path / "m"))
    np.testing.assert_allclose(fresh(b)[SEQUENCE_OUTPUT].numpy(), bb(b)[SEQUENCE_OUTPUT].numpy(), atol=1e-5)
    other = SequenceBackbone(V + 1, max_len=L, hidden_dim=16, num_layers=1, num_heads=2, intermediate_dim=32)
    with pytest.raises(TfrecError, match="vocabulary_size 40, but this model has 41"):
        persistence.load_backbone_weights(other, str(tmp_path / "m"))
    with pytest.raises(TfrecError, match="not a saved tfrec model"):
        persistence.load(str(tmp_path))


@pytest.mark.slow
def test_pretrain_then_finetune_beats_popularity(synthetic_prepared):
    tf.keras.utils.set_random_seed(0)
    d = synthetic_prepared
    vocab, max_len = len(d.item_vocab), 20
    _, seqs = inputs.loo_sequences(d, schema.TRAIN)
    bb = SequenceBackbone(vocab, max_len=max_len, hidden_dim=32, num_layers=1, num_heads=2, intermediate_dim=64, dropout=0.1)
    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    pre = MaskedItemPretrainer(bb)
    pre.compile(tf.keras.optimizers.Adam(3e-3), loss=loss, weighted_metrics=[])
    hist = pre.fit(inputs.masked_item_dataset(seqs, max_len, vocab, batch_size=64, mask_rate=0.3, seed=0), epochs=5, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    rec = NextItemRecommender(bb)
    rec.compile(tf.keras.optimizers.Adam(3e-3), loss=loss)
    x, y = inputs.next_item_examples(seqs, max_len)
    rec.fit(inputs.next_item_dataset(x, y, batch_size=64), epochs=8, verbose=0)
    test = inputs.loo_sequences(d, schema.TEST)
    model_m, _ = ranking.evaluate(lambda h: rec.score(inputs.with_mask_slot(h, max_len)), test.histories, test.targets)
    pop_m, _ = ranking.evaluate(ranking.popularity_scorer(seqs, vocab), test.histories, test.targets)
    assert model_m["hr@10"] > pop_m["hr@10"] + 0.2, (model_m, pop_m)
