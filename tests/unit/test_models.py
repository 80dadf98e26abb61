import keras_nlp
import numpy as np
import pytest
import tensorflow as tf

from tfrec.contract import ITEM_INDICES, PADDING_MASK
from tfrec.data import inputs, schema
from tfrec.errors import TfrecError
from tfrec.evaluation import ranking
from tfrec.models import persistence
from tfrec.models.sequence_backbone import SEQUENCE_OUTPUT, SequenceBackbone
from tfrec.models.tasks import ITEM_HIDDEN, MaskedItemPretrainer, NextItemRecommender, count_parameters

V, L = 40, 8


def small_backbone(**kw):
    return SequenceBackbone(V, max_len=L, hidden_dim=16, num_layers=1, num_heads=2, intermediate_dim=32, **kw)


def batch(n=3):
    ids = np.random.default_rng(0).integers(3, V, size=(n, L)).astype(np.int32)
    ids[:, :3] = 0
    return {ITEM_INDICES: ids, PADDING_MASK: ids != 0}


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
    b2 = {ITEM_INDICES: b[ITEM_INDICES].copy(), PADDING_MASK: b[PADDING_MASK]}
    b2[ITEM_INDICES][0, :3] = 7  # garbage under the padding mask
    np.testing.assert_allclose(bb(b2)[SEQUENCE_OUTPUT].numpy()[0, -1], ref, atol=1e-5)


def test_causal_backbone_positions_see_only_the_past_and_round_trip(tmp_path):
    bb = small_backbone(dropout=0.0, causal=True)
    assert bb.get_config()["causal"] is True and SequenceBackbone.from_config(bb.get_config()).causal
    b = batch(2)
    ref = bb(b)[SEQUENCE_OUTPUT].numpy()
    later = {ITEM_INDICES: b[ITEM_INDICES].copy(), PADDING_MASK: b[PADDING_MASK]}
    later[ITEM_INDICES][:, 5:] = (later[ITEM_INDICES][:, 5:] + 1 - 3) % (V - 3) + 3  # other items from position 5 on
    out = bb(later)[SEQUENCE_OUTPUT].numpy()
    np.testing.assert_allclose(out[:, 3:5], ref[:, 3:5], atol=1e-5)  # real positions before 5: unchanged
    assert np.abs(out[:, 5:] - ref[:, 5:]).max() > 1e-3
    # the same weights without the causal mask see the whole sequence
    both = small_backbone(dropout=0.0)
    both.set_weights(bb.get_weights())
    assert np.abs(both(b)[SEQUENCE_OUTPUT].numpy()[:, 3:5] - ref[:, 3:5]).max() > 1e-3
    np.testing.assert_allclose(both(b)[SEQUENCE_OUTPUT].numpy()[:, -1], ref[:, -1], atol=1e-5)  # the last sees all
    # a causal next-item model states every position and scores from the last item's state,
    # from the mask slot's for an empty history; it saves and loads as causal, and takes a
    # bidirectional backbone's weights as they are
    rec = NextItemRecommender(bb)
    ids = b[ITEM_INDICES].copy()
    ids[:, -1] = schema.MASK_ID
    assert (ids[:, -2] != 0).all()
    hidden = rec({ITEM_INDICES: ids, PADDING_MASK: ids != 0})[ITEM_HIDDEN]
    assert hidden.shape == (2, L, 16)
    np.testing.assert_allclose(rec.score(ids), rec.head.project(hidden[:, -2]).numpy(), atol=1e-5)
    assert np.abs(rec.score(ids) - rec.head.project(hidden[:, -1]).numpy()).max() > 1e-3
    empty = np.zeros((1, L), np.int32)
    empty[0, -1] = schema.MASK_ID
    slot = rec({ITEM_INDICES: empty, PADDING_MASK: empty != 0})[ITEM_HIDDEN][:, -1]
    np.testing.assert_allclose(rec.score(empty), rec.head.project(slot).numpy(), atol=1e-4)  # a batch trimmed to the slot
    persistence.save(rec, str(tmp_path / "m"), "next-item")
    loaded, _ = persistence.load(str(tmp_path / "m"))
    assert loaded.backbone.causal
    np.testing.assert_allclose(loaded.score(ids), rec.score(ids), atol=1e-5)
    # the saved causal weights seed a bidirectional backbone as they are (and the reverse is the same check)
    bidirectional = small_backbone(dropout=0.0)
    persistence.load_backbone_weights(bidirectional, str(tmp_path / "m"))
    np.testing.assert_allclose(bidirectional(b)[SEQUENCE_OUTPUT].numpy()[:, -1], ref[:, -1], atol=1e-5)


def test_causal_next_item_model_trains_on_every_position():
    tf.keras.utils.set_random_seed(4)
    rng = np.random.default_rng(1)
    # item t+1 follows item t: learnable from every position
    seqs = [(rng.integers(3, V) + np.arange(rng.integers(2, 2 * L))) % (V - 3) + 3 for _ in range(128)]
    x, y = inputs.causal_next_item_examples([s.astype(np.int32) for s in seqs], L)
    rec = NextItemRecommender(small_backbone(dropout=0.1, causal=True), contrastive_weight=0.1)
    rec.compile(tf.keras.optimizers.Adam(2e-2))
    hist = rec.fit(inputs.causal_next_item_dataset(x, y, batch_size=32, trim=True, sort_window=2), epochs=15,
                   verbose=0).history
    assert hist["item_loss"][-1] < 0.5 * hist["item_loss"][0] and np.isfinite(hist["contrastive_loss"]).all()
    histories = [s[:-1].astype(np.int32) for s in seqs[:64]]
    targets = np.array([s[-1] for s in seqs[:64]])
    scores = rec.score(inputs.with_mask_slot(histories, L))
    ranks = ranking.target_ranks(scores, targets, None)
    assert np.mean(ranks < 1) > 0.8


def test_item_features_change_the_embedding():
    table = np.zeros((V, 2), np.int32)
    table[3:, 0] = np.arange(3, V) % 4 + 1
    bb = small_backbone(feature_table=table, feature_vocabulary_size=6)
    assert bb(batch())[SEQUENCE_OUTPUT].shape == (3, L, 16)
    assert SequenceBackbone.from_config(bb.get_config()).count_params() == bb.count_params()
    assert bb.count_params() == small_backbone().count_params() + 6 * 16


def test_output_features_score_against_item_plus_feature_embedding(tmp_path):
    table = np.zeros((V, 2), np.int32)
    table[3:, 0] = np.arange(3, V) % 4 + 1
    table[3:, 1] = np.arange(3, V) % 3 + 1
    plain = small_backbone(feature_table=table, feature_vocabulary_size=6)
    bb = small_backbone(feature_table=table, feature_vocabulary_size=6, output_features=True)
    assert bb.get_config()["output_features"] is True
    assert bb.count_params() == plain.count_params()  # no new weights: the feature embedding is shared
    rec = NextItemRecommender(bb)
    b = batch()
    hidden = rec(b)[ITEM_HIDDEN][:, 0]
    pooled = np.stack([bb.feature_embedding(np.array([[i]]))[0, 0].numpy() for i in range(V)])
    expected = hidden.numpy() @ (bb.token_embedding.embeddings.numpy() + pooled).T + rec.head.output_bias.numpy()
    np.testing.assert_allclose(rec.head.project(hidden).numpy(), expected, atol=1e-5)
    # differs from scoring against the item embedding alone
    alone = hidden.numpy() @ bb.token_embedding.embeddings.numpy().T + rec.head.output_bias.numpy()
    assert np.abs(expected - alone).max() > 1e-4
    persistence.save(rec, str(tmp_path / "m"), "next-item")
    loaded, _ = persistence.load(str(tmp_path / "m"))
    assert loaded.backbone.output_features
    np.testing.assert_allclose(loaded.score(b[ITEM_INDICES]), rec.score(b[ITEM_INDICES]), atol=1e-5)
    # without item features the option has nothing to add and is off
    assert small_backbone(output_features=True).output_features is False


def test_output_extra_dim_widens_the_item_vectors_and_starts_as_the_tied_head(tmp_path):
    from tfrec.models.tasks import copy_head_weights

    b = batch()
    source = NextItemRecommender(small_backbone(dropout=0.0))
    source(b)
    wide = NextItemRecommender(small_backbone(dropout=0.0, output_extra_dim=8))
    wide(b)
    assert wide.backbone.get_config()["output_extra_dim"] == 8
    assert count_parameters(wide) == count_parameters(source) + V * 8 + 16 * 8 + 8
    wide.backbone.set_weights(source.backbone.get_weights())
    copy_head_weights(wide.head, source.head)
    hidden = wide(b)[ITEM_HIDDEN][:, 0]
    assert hidden.shape == (3, 16 + 8)
    assert wide.head.item_matrix().shape == (V, 16 + 8)
    # the extra state starts at zero: the same logits as the head it was copied from
    np.testing.assert_allclose(hidden.numpy()[:, 16:], 0.0)
    np.testing.assert_allclose(wide.score(b[ITEM_INDICES]), source.score(b[ITEM_INDICES]), atol=1e-5)
    # once the extra state moves, the logits are the state times [tied, extra] plus the bias
    wide.head._extra_dense.kernel.assign(tf.random.normal(wide.head._extra_dense.kernel.shape, seed=1))
    hidden = wide(b)[ITEM_HIDDEN][:, 0].numpy()
    matrix = np.concatenate([wide.backbone.token_embedding.embeddings.numpy(), wide.head._extra_items.numpy()], 1)
    expected = hidden @ matrix.T + wide.head.output_bias.numpy()
    np.testing.assert_allclose(wide.score(b[ITEM_INDICES]), expected, atol=1e-4)
    assert np.abs(expected - source.score(b[ITEM_INDICES])).max() > 1e-3
    persistence.save(wide, str(tmp_path / "m"), "next-item")
    loaded, _ = persistence.load(str(tmp_path / "m"))
    np.testing.assert_allclose(loaded.score(b[ITEM_INDICES]), wide.score(b[ITEM_INDICES]), atol=1e-5)
    # the serving graph scores against the snapshot [tied, extra] and serves those item vectors
    from tfrec.export.signatures import EMBEDDINGS, SequenceServing

    vocab = tmp_path / "items.txt"
    vocab.write_text("".join(f"i{i}\n" for i in range(V)))
    serving = SequenceServing(wide, str(vocab), None, L, k=5)
    packed = tf.constant(b[ITEM_INDICES][:, 3:])
    np.testing.assert_allclose(serving.scores(packed).numpy(), wide.logits(packed).numpy(), atol=1e-4)
    vectors = serving.embeddings(["i3", "i9"])[EMBEDDINGS].numpy()
    assert vectors.shape == (2, 16 + 8 + 1)
    np.testing.assert_allclose(vectors[:, :-1], matrix[[3, 9]], atol=1e-6)
    # a head without the extra vectors takes the tied part of a head with them
    narrow = NextItemRecommender(small_backbone(dropout=0.0))
    narrow(b)
    copy_head_weights(narrow.head, wide.head)
    np.testing.assert_allclose(narrow.head.output_bias.numpy(), wide.head.output_bias.numpy())
    with pytest.raises(ValueError):
        small_backbone(output_extra_dim=-1)


def test_output_last_item_adds_the_last_items_vector_to_the_state(tmp_path):
    from tfrec.models.tasks import copy_head_weights

    b = batch()
    ids = b[ITEM_INDICES]
    x8 = NextItemRecommender(small_backbone(dropout=0.0, output_extra_dim=8))
    x8(b)
    x8.head._extra_dense.kernel.assign(tf.random.normal(x8.head._extra_dense.kernel.shape, seed=2))
    model = NextItemRecommender(small_backbone(dropout=0.0, output_extra_dim=8, output_last_item=True))
    model(b)
    assert model.backbone.get_config()["output_last_item"] is True
    assert count_parameters(model) == count_parameters(x8) + V * (16 + 8)
    model.backbone.set_weights(x8.backbone.get_weights())
    # a source without the vectors: its extra part is taken, the new vectors start at zero
    copy_head_weights(model.head, x8.head)
    np.testing.assert_allclose(model.head._extra_items.numpy(), x8.head._extra_items.numpy())
    np.testing.assert_allclose(model.score(ids), x8.score(ids), atol=1e-5)
    vectors = tf.random.normal([V, 16 + 8], seed=3)
    model.head._last_item_vectors.assign(vectors)
    # the state gains the vector of the item before the slot (the history's last item)
    moved = model(b)[ITEM_HIDDEN][:, 0].numpy() - x8(b)[ITEM_HIDDEN][:, 0].numpy()
    np.testing.assert_allclose(moved, vectors.numpy()[ids[:, -2]], atol=1e-5)
    # a history trimmed to the slot alone reads the padding row
    alone = model.logits(tf.constant(ids[:, -1:])).numpy() - x8.logits(tf.constant(ids[:, -1:])).numpy()
    np.testing.assert_allclose(alone, np.tile(vectors.numpy()[0] @ x8.head.item_matrix().numpy().T, (3, 1)),
                               atol=1e-4)
    persistence.save(model, str(tmp_path / "m"), "next-item")
    loaded, _ = persistence.load(str(tmp_path / "m"))
    np.testing.assert_allclose(loaded.score(ids), model.score(ids), atol=1e-5)
    from tfrec.export.signatures import SequenceServing

    vocab = tmp_path / "items.txt"
    vocab.write_text("".join(f"i{i}\n" for i in range(V)))
    serving = SequenceServing(model, str(vocab), None, L, k=5)
    packed = tf.constant(ids[:, 3:])
    np.testing.assert_allclose(serving.scores(packed).numpy(), model.logits(packed).numpy(), atol=1e-4)
    # between heads that both have them, the vectors are copied; a head without them leaves them out
    twin = NextItemRecommender(small_backbone(dropout=0.0, output_last_item=True, output_extra_dim=8))
    twin(b)
    copy_head_weights(twin.head, model.head)
    np.testing.assert_allclose(twin.head._last_item_vectors.numpy(), vectors.numpy())
    copy_head_weights(x8.head, model.head)
    # a causal model's every position is followed by the item at that position
    causal = NextItemRecommender(small_backbone(dropout=0.0, causal=True, output_last_item=True))
    plain = NextItemRecommender(small_backbone(dropout=0.0, causal=True))
    causal(b), plain(b)
    causal.backbone.set_weights(plain.backbone.get_weights())
    copy_head_weights(causal.head, plain.head)
    causal.head._last_item_vectors.assign(vectors[:, :16])
    moved = causal(b)[ITEM_HIDDEN].numpy() - plain(b)[ITEM_HIDDEN].numpy()
    np.testing.assert_allclose(moved, vectors.numpy()[:, :16][ids], atol=1e-5)
    with pytest.raises(ValueError, match="previous_items"):
        model.head(model.backbone(b)[SEQUENCE_OUTPUT], mask_positions=np.full((3, 1), L - 1, np.int64))


def test_heads_are_tied_to_the_item_embedding():
    bb = small_backbone()
    pre = MaskedItemPretrainer(bb)
    rec = NextItemRecommender(bb)
    b = batch()
    hidden = pre(dict(b, mask_positions=np.array([[7, 6]] * 3, np.int64)))[ITEM_HIDDEN]
    assert hidden.shape == (3, 2, 16)
    assert pre.head.project(hidden).shape == (3, 2, V)
    assert rec.score(b[ITEM_INDICES]).shape == (3, V)
    emb = bb.token_embedding.embeddings
    assert any(w is emb for w in pre.trainable_weights) and any(w is emb for w in rec.trainable_weights)
    # no second V x D output matrix: the heads add only their dense, norm and bias
    assert count_parameters(pre) - count_parameters(bb) == 16 * 16 + 16 + 2 * 16 + V


def test_item_head_equals_keras_nlp_masked_lm_head():
    bb = small_backbone()
    pre = MaskedItemPretrainer(bb)
    b = batch()
    positions = np.array([[7, 3]] * 3, np.int64)
    seq = bb(b)[SEQUENCE_OUTPUT]
    stock = keras_nlp.layers.MaskedLMHead(vocabulary_size=V, token_embedding=bb.token_embedding,
                                          intermediate_activation="gelu")
    stock(seq, mask_positions=positions)
    stock.set_weights(pre.head.get_weights())
    np.testing.assert_allclose(pre.head.project(pre.head(seq, mask_positions=positions)).numpy(),
                               stock(seq, mask_positions=positions).numpy(), atol=1e-5)


def test_trimmed_batches_give_the_same_scores():
    bb = small_backbone(dropout=0.0)
    rec = NextItemRecommender(bb)
    ids = np.zeros((2, L), np.int32)
    ids[0, -3:] = [5, 6, 1]
    ids[1, -2:] = [9, 1]
    full = rec({ITEM_INDICES: ids, PADDING_MASK: ids != 0})[ITEM_HIDDEN].numpy()
    trimmed = rec({ITEM_INDICES: ids[:, -3:], PADDING_MASK: ids[:, -3:] != 0})[ITEM_HIDDEN].numpy()
    np.testing.assert_allclose(trimmed, full, atol=1e-5)
    np.testing.assert_allclose(rec.score(ids), rec.head.project(full[:, 0]).numpy(), atol=1e-4)


def test_sampled_softmax_and_extra_objectives_train():
    tf.keras.utils.set_random_seed(1)
    rng = np.random.default_rng(0)
    seqs = [rng.integers(3, V, size=rng.integers(2, L + 1)).astype(np.int32) for _ in range(64)]
    counts = np.bincount(np.concatenate(seqs), minlength=V)
    table = np.zeros((V, 2), np.int32)
    table[3:, 0] = np.arange(3, V) % 4 + 1
    bb = small_backbone()
    pre = MaskedItemPretrainer(bb, num_sampled=8, item_counts=counts, attribute_table=table, attribute_size=5,
                               attribute_weight=0.5, continuation_weight=0.5)
    pre.compile(tf.keras.optimizers.Adam(1e-2))
    ds = inputs.masked_item_dataset(seqs, L, V, batch_size=16, mask_rate=0.3, continuation_rate=0.5, trim=True,
                                    sort_window=2)
    hist = pre.fit(ds, epochs=6, verbose=0).history
    for key in ("loss", "item_loss", "attribute_loss", "continuation_loss", "continuation_accuracy"):
        assert key in hist and np.all(np.isfinite(hist[key])), key
    assert hist["attribute_loss"][-1] < hist["attribute_loss"][0]
    # evaluation uses the full softmax even when training samples
    assert pre.evaluate(ds, verbose=0, return_dict=True)["item_loss"] > 0
    with pytest.raises(ValueError, match="needs item_counts"):
        MaskedItemPretrainer(small_backbone(), num_sampled=4)


def test_contrastive_regulariser_matches_its_definition_and_trains():
    tf.keras.utils.set_random_seed(2)
    # Without dropout both views are the same state h: the loss is the cross-entropy of the
    # logits h h^T towards the diagonal, both ways, with same-target pairs left out.
    rec = NextItemRecommender(small_backbone(dropout=0.0), contrastive_weight=0.1, contrastive_temperature=2.0)
    b = batch(4)
    b[ITEM_INDICES][:, -1] = schema.MASK_ID
    b[PADDING_MASK] = b[ITEM_INDICES] != 0
    labels = tf.constant([[5], [6], [5], [7]])
    hidden = rec(b, training=True)[ITEM_HIDDEN]
    loss = float(rec._contrastive_loss(b, hidden, labels, tf.ones([4, 1])))
    h = hidden.numpy()[:, 0]
    logits = h @ h.T / 2.0
    logits[0, 2] = logits[2, 0] = -1e9
    log_softmax = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) \
        - logits.max(1, keepdims=True)
    assert loss == pytest.approx(-np.mean(np.diag(log_softmax)), rel=1e-4)  # logits are symmetric here
    # Two identical rows are each other's negatives only when their targets differ.
    twin = {k: np.repeat(v[:1], 2, axis=0) for k, v in b.items()}
    twin_hidden = rec(twin, training=True)[ITEM_HIDDEN]
    same = float(rec._contrastive_loss(twin, twin_hidden, tf.constant([[5], [5]]), tf.ones([2, 1])))
    different = float(rec._contrastive_loss(twin, twin_hidden, tf.constant([[5], [6]]), tf.ones([2, 1])))
    assert same == pytest.approx(0.0, abs=1e-5) and different == pytest.approx(np.log(2), rel=1e-4)

    rng = np.random.default_rng(0)
    seqs = [rng.integers(3, V, size=rng.integers(2, L + 1)).astype(np.int32) for _ in range(64)]
    x, y = inputs.next_item_examples(seqs, L)
    rec = NextItemRecommender(small_backbone(dropout=0.2), contrastive_weight=0.5)
    rec.compile(tf.keras.optimizers.Adam(1e-2))
    hist = rec.fit(inputs.next_item_dataset(x, y, batch_size=32, trim=True), epochs=3, verbose=0).history
    assert np.all(np.isfinite(hist["contrastive_loss"])) and hist["contrastive_loss"][-1] < hist["contrastive_loss"][0]
    assert hist["loss"][0] > hist["item_loss"][0]


def test_distillation_targets_and_loss_match_their_definitions():
    from tfrec.training.distill import teacher_targets

    tf.keras.utils.set_random_seed(3)
    teacher = NextItemRecommender(small_backbone(dropout=0.0))
    b = batch(5)
    b[ITEM_INDICES][:, -1] = schema.MASK_ID
    # The teacher's top items at temperature 2, reserved ids left out, probabilities renormalised.
    ids, probs = teacher_targets(teacher, b[ITEM_INDICES], top_k=6, temperature=2.0, batch_size=2)
    assert ids.shape == probs.shape == (5, 6) and ids.dtype == np.int32
    logits = teacher.score(b[ITEM_INDICES]) / 2.0
    logits[:, :schema.NUM_ITEM_RESERVED] = -np.inf
    expected = np.argsort(-logits, axis=1)[:, :6]
    np.testing.assert_array_equal(ids, expected)
    top = np.take_along_axis(logits, expected, axis=1)
    np.testing.assert_allclose(probs, np.exp(top) / np.exp(top).sum(1, keepdims=True), rtol=1e-4)
    assert (ids >= schema.NUM_ITEM_RESERVED).all() and (np.diff(probs, axis=1) <= 1e-7).all()
    # The whole catalogue when top_k exceeds it.
    assert teacher_targets(teacher, b[ITEM_INDICES][:1], top_k=10 ** 6)[0].shape == (1, V - schema.NUM_ITEM_RESERVED)

    # The loss: temperature^2 x cross-entropy of the teacher's probabilities against the
    # student's softened log-softmax, weighted over rows.
    student = NextItemRecommender(small_backbone(dropout=0.0), distill_weight=0.5, distill_temperature=2.0)
    hidden = student(b)[ITEM_HIDDEN]
    weight = tf.constant([[1.0], [0.0], [2.0], [1.0], [1.0]])
    got = float(student.objectives["distill"](student.head.project(hidden[:, -1]), tf.constant(ids), tf.constant(probs),
                                              weight[:, -1]))
    z = student.score(b[ITEM_INDICES]) / 2.0
    log_q = z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
    rows = -(probs * np.take_along_axis(log_q, ids, axis=1)).sum(1)
    w = weight.numpy()[:, 0]
    assert got == pytest.approx(4.0 * (rows * w).sum() / w.sum(), rel=1e-4)
    # A one-hot teacher at temperature 1 is the plain next-item cross-entropy.
    plain = NextItemRecommender(small_backbone(dropout=0.0), distill_weight=1.0)
    labels = np.array([5, 6, 7, 8, 9], np.int32)
    one_hot = float(plain.objectives["distill"](plain.head.project(plain(b)[ITEM_HIDDEN][:, -1]),
                                                tf.constant(labels[:, None]), tf.ones([5, 1]), tf.ones([5])))
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=plain.score(b[ITEM_INDICES]))
    assert one_hot == pytest.approx(float(tf.reduce_mean(ce)), rel=1e-4)

    # Training: the batches carry the targets, the loss adds the weighted term, and the model
    # moves towards the teacher.
    rng = np.random.default_rng(0)
    seqs = [rng.integers(3, V, size=rng.integers(2, L + 1)).astype(np.int32) for _ in range(64)]
    x, y = inputs.next_item_examples(seqs, L)
    soft = teacher_targets(teacher, x, top_k=8)
    ds = inputs.next_item_dataset(x, y, batch_size=32, trim=True, soft_targets=soft)
    _, labels_batch, _ = next(iter(ds))
    assert labels_batch[inputs.TEACHER_ITEMS].shape == (32, 8) and labels_batch[inputs.TEACHER_PROBS].shape == (32, 8)
    with pytest.raises(TfrecError, match="teacher targets"):
        inputs.next_item_dataset(x, y, soft_targets=(soft[0][:-1], soft[1][:-1]))
    # One batch's loss, from logits projected once for both terms: the weighted cross-entropy of
    # the observed items plus the weight x the distillation term.
    xb, yb, wb = next(iter(inputs.next_item_dataset(x, y, batch_size=16, trim=True, soft_targets=soft)))
    wb = tf.cast(wb, tf.float32) * tf.constant([[0.0]] + [[1.0]] * 15)
    total = float(student.compute_loss(x=xb, y=yb, y_pred=student(xb), sample_weight=wb))
    z = student.score(xb[ITEM_INDICES].numpy())
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=yb[inputs.ITEMS][:, -1], logits=z).numpy()
    w = wb.numpy()[:, -1]
    distill_term = float(student.objectives["distill"](tf.constant(z), yb[inputs.TEACHER_ITEMS], yb[inputs.TEACHER_PROBS],
                                                       wb[:, -1]))
    assert total == pytest.approx((ce * w).sum() / w.sum() + 0.5 * distill_term, rel=1e-4)
    student.compile(tf.keras.optimizers.Adam(1e-2))
    hist = student.fit(ds, epochs=4, verbose=0).history
    assert hist["distill_loss"][-1] < hist["distill_loss"][0]
    assert hist["loss"][0] == pytest.approx(hist["item_loss"][0] + 0.5 * hist["distill_loss"][0], rel=1e-3)


def test_save_load_and_pretrained_transfer(tmp_path):
    bb = small_backbone()
    rec = NextItemRecommender(bb)
    b = batch()
    persistence.save(rec, str(tmp_path / "m"), "next-item")
    loaded, config = persistence.load(str(tmp_path / "m"))
    np.testing.assert_allclose(loaded.score(b[ITEM_INDICES]), rec.score(b[ITEM_INDICES]), atol=1e-5)
    fresh = small_backbone()
    persistence.load_backbone_weights(fresh, str(tmp_path / "m"))
    np.testing.assert_allclose(fresh(b)[SEQUENCE_OUTPUT].numpy(), bb(b)[SEQUENCE_OUTPUT].numpy(), atol=1e-5)
    other = SequenceBackbone(V + 1, max_len=L, hidden_dim=16, num_layers=1, num_heads=2, intermediate_dim=32)
    with pytest.raises(TfrecError, match="vocabulary_size 40, but this model has 41"):
        persistence.load_backbone_weights(other, str(tmp_path / "m"))
    with pytest.raises(TfrecError, match="not a saved tfrec model"):
        persistence.load(str(tmp_path))
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(TfrecError, match="not valid JSON"):
        persistence.load(str(tmp_path / "m"))


@pytest.mark.slow
def test_pretrain_then_finetune_beats_popularity(synthetic_prepared):
    tf.keras.utils.set_random_seed(0)
    d = synthetic_prepared
    vocab, max_len = len(d.item_vocab), 20
    _, seqs = inputs.loo_sequences(d, schema.TRAIN)
    bb = SequenceBackbone(vocab, max_len=max_len, hidden_dim=32, num_layers=1, num_heads=2, intermediate_dim=64, dropout=0.1)
    pre = MaskedItemPretrainer(bb)
    pre.compile(tf.keras.optimizers.Adam(3e-3))
    hist = pre.fit(inputs.masked_item_dataset(seqs, max_len, vocab, batch_size=64, mask_rate=0.3, seed=0, trim=True),
                   epochs=5, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    rec = NextItemRecommender(bb)
    rec.compile(tf.keras.optimizers.Adam(3e-3))
    x, y = inputs.next_item_examples(seqs, max_len)
    rec.fit(inputs.next_item_dataset(x, y, batch_size=64, trim=True), epochs=8, verbose=0)
    test = inputs.loo_sequences(d, schema.TEST)
    model_m, _ = ranking.evaluate(lambda h: rec.score(inputs.with_mask_slot(h, max_len)), test.histories, test.targets)
    pop_m, _ = ranking.evaluate(ranking.popularity_scorer(seqs, vocab), test.histories, test.targets)
    assert model_m["hr@10"] > pop_m["hr@10"] + 0.2, (model_m, pop_m)


def test_ensemble_averages_member_log_probabilities_and_round_trips(tmp_path):
    from tfrec.models.ensemble import NextItemEnsemble

    tf.random.set_seed(1)
    a, b = NextItemRecommender(small_backbone()), NextItemRecommender(small_backbone())
    ens = NextItemEnsemble([a, b], member_weights=[3, 1])
    assert ens.member_weights == [0.75, 0.25]
    ids = batch()[ITEM_INDICES]
    got = ens.score(ids)
    expected = 0.75 * tf.nn.log_softmax(a.score(ids)).numpy() + 0.25 * tf.nn.log_softmax(b.score(ids)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert got.shape == (3, V) and ens.backbone.vocabulary_size == V
    # the ensemble's ranking is neither member's alone
    assert not np.array_equal(np.argsort(-got, axis=1), np.argsort(-a.score(ids), axis=1))
    persistence.save(ens, str(tmp_path / "e"), "ensemble")
    loaded, config = persistence.load(str(tmp_path / "e"))
    assert config["task"] == "ensemble" and [m["task"] for m in config["members"]] == ["next-item", "next-item"]
    np.testing.assert_allclose(loaded.score(ids), got, atol=1e-5)


def test_ensemble_rejects_models_it_cannot_combine():
    from tfrec.models.ensemble import NextItemEnsemble

    a = NextItemRecommender(small_backbone())
    with pytest.raises(ValueError, match="at least two"):
        NextItemEnsemble([a])
    other = NextItemRecommender(SequenceBackbone(V + 1, max_len=L, hidden_dim=16, num_layers=1, num_heads=2,
                                                 intermediate_dim=32))
    with pytest.raises(ValueError, match="same data"):
        NextItemEnsemble([a, other])
    with pytest.raises(ValueError, match="positive"):
        NextItemEnsemble([a, NextItemRecommender(small_backbone())], member_weights=[1, 0])
    with pytest.raises(ValueError, match="2 models"):
        NextItemEnsemble([a, NextItemRecommender(small_backbone())], member_weights=[1])
