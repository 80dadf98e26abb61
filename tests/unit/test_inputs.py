import numpy as np
import pytest
import tensorflow as tf

from tfrec.data import augment, inputs, schema
from tfrec.errors import TfrecError

MASK = schema.MASK_ID


def arr(*xs):
    return np.asarray(xs, np.int32)


def test_pad_left_keeps_the_latest_items():
    out = inputs.pad_left([arr(5, 6, 7), arr(8), arr()], 2)
    np.testing.assert_array_equal(out, [[6, 7], [0, 8], [0, 0]])


def test_sliding_windows_cover_every_item():
    s = np.arange(10, 20, dtype=np.int32)  # 10 items, windows of 4, stride 3: ends 10, 7, 4
    wins = inputs.sliding_windows([s, arr(1, 2)], max_len=4, stride=3)
    assert [w.tolist() for w in wins] == [[10, 11, 12, 13], [13, 14, 15, 16], [16, 17, 18, 19], [1, 2]]
    with pytest.raises(TfrecError):
        inputs.sliding_windows([s], 0)


def test_next_item_examples_by_hand():
    x, y = inputs.next_item_examples([arr(3, 4, 5, 6)], max_len=3)
    # histories [3], [3,4], [4,5] (last max_len-1 = 2 items), then the mask slot
    np.testing.assert_array_equal(x, [[0, 3, MASK], [3, 4, MASK], [4, 5, MASK]])
    np.testing.assert_array_equal(y, [4, 5, 6])
    np.testing.assert_array_equal(inputs.with_mask_slot([arr(7, 8, 9)], 3), [[8, 9, MASK]])


def test_causal_next_item_examples_by_hand():
    x, y = inputs.causal_next_item_examples([arr(3, 4, 5, 6), arr(7), arr(8, 9)], max_len=3)
    # the windows of 3 of the first sequence, [3, 4, 5] and [4, 5, 6]; [7] alone gives no row
    np.testing.assert_array_equal(x, [[3, 4, MASK], [4, 5, MASK], [0, 8, MASK]])
    np.testing.assert_array_equal(y, [[4, 5, 0], [5, 6, 0], [0, 9, 0]])  # no target at the slot
    ds = inputs.causal_next_item_dataset(x[:2], y[:2], batch_size=2, shuffle=False, trim=True)
    features, labels, weights = next(iter(ds))
    np.testing.assert_array_equal(features[inputs.ITEM_INDICES], x[:2])  # no column is padding in every row
    np.testing.assert_array_equal(labels["items"], y[:2])
    np.testing.assert_array_equal(weights, y[:2] != 0)
    short = inputs.causal_next_item_dataset(np.array([[0, 0, 8, MASK]], np.int32), np.array([[0, 0, 9, 0]], np.int32),
                                            batch_size=1, shuffle=False, trim=True)
    features, labels, weights = next(iter(short))  # leading padding trimmed from labels and weights too
    np.testing.assert_array_equal(features[inputs.ITEM_INDICES], [[8, MASK]])
    np.testing.assert_array_equal(labels["items"], [[9, 0]])
    np.testing.assert_array_equal(weights, [[1.0, 0.0]])
    np.testing.assert_array_equal(features["padding_mask"], [[True, True]])


def test_last_example_weights_follow_the_examples():
    seqs = [arr(3, 4, 5, 6), arr(7), arr(8, 9)]
    x, y = inputs.next_item_examples(seqs, max_len=3)
    np.testing.assert_array_equal(y, [4, 5, 6, 9])  # a one-item sequence gives no example
    w = inputs.last_example_weights(seqs, 3.0)
    np.testing.assert_array_equal(w, [1, 1, 3, 3])  # each sequence's latest target weighs 3
    ds = inputs.next_item_dataset(x, y, batch_size=4, shuffle=False, weights=w)
    (_, labels, weights), = list(ds)
    np.testing.assert_array_equal(labels["items"][:, 0], y)
    np.testing.assert_array_equal(weights[:, 0], w)
    with pytest.raises(TfrecError, match="3 example weights for 4 examples"):
        inputs.next_item_dataset(x, y, weights=w[:3])


def _collect(ds):
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in ds]


def test_masked_item_batches_are_consistent_and_seeded():
    rng = np.random.default_rng(0)
    seqs = [rng.integers(3, 500, size=rng.integers(2, 30)).astype(np.int32) for _ in range(300)]
    padded = inputs.pad_left(seqs, 20)
    kwargs = dict(max_len=20, vocabulary_size=500, batch_size=64, mask_rate=0.25, shuffle=False, seed=5)
    a = _collect(inputs.masked_item_dataset(padded, **kwargs))
    b = _collect(inputs.masked_item_dataset(padded, **kwargs))
    c = _collect(inputs.masked_item_dataset(padded, **dict(kwargs, seed=6)))
    row = 0
    masked_total = 0
    for (x, y, w), (xb, yb, wb), (xc, _, _) in zip(a, b, c):
        y, yb = y["items"], yb["items"]
        np.testing.assert_array_equal(x[inputs.ITEM_INDICES], xb[inputs.ITEM_INDICES])
        np.testing.assert_array_equal(y, yb)
        for i in range(len(y)):
            orig = padded[row + i]
            n = int((orig != 0).sum())
            k = int(w[i].sum())
            assert k == min(int(np.ceil(0.25 * n)), 5)              # quota, capped at ceil(0.25 * 20)
            pos = x["mask_positions"][i][:k]
            assert np.all(orig[pos] != 0)                            # padding is never masked
            np.testing.assert_array_equal(y[i][:k], orig[pos])       # labels are the original items
            assert np.all(x[inputs.ITEM_INDICES][i][pos] == MASK)
            untouched = np.setdiff1d(np.arange(20), pos)
            np.testing.assert_array_equal(x[inputs.ITEM_INDICES][i][untouched], orig[untouched])
            np.testing.assert_array_equal(x["padding_mask"][i], orig != 0)
            masked_total += k
        row += len(y)
    assert row == 300 and masked_total > 0
    assert any(not np.array_equal(x[inputs.ITEM_INDICES], xc[inputs.ITEM_INDICES]) for (x, _, _), (xc, _, _) in zip(a, c))


def test_mask_last_variant_masks_only_the_last_item():
    seqs = [np.arange(3, 3 + n, dtype=np.int32) for n in range(2, 12)] * 20
    ds = inputs.masked_item_dataset(seqs, max_len=12, vocabulary_size=50, batch_size=200, mask_rate=0.3,
                                    mask_last_rate=1.0, shuffle=False)
    x, y, w = next(iter(ds))
    y = y["items"]
    padded = inputs.pad_left(seqs, 12)
    assert np.all(x["mask_positions"].numpy()[:, 0] == 11)
    np.testing.assert_array_equal(y.numpy()[:, 0], padded[:, -1])
    assert np.all(w.numpy()[:, 0] == 1.0) and np.all(w.numpy()[:, 1:] == 0.0)
    np.testing.assert_array_equal(x[inputs.ITEM_INDICES].numpy()[:, :-1], padded[:, :-1])
    # about half at rate 0.5
    ds = inputs.masked_item_dataset(seqs, max_len=12, vocabulary_size=50, batch_size=200, mask_rate=0.3,
                                    mask_last_rate=0.5, shuffle=False)
    x, _, w = next(iter(ds))
    only_last = (w.numpy().sum(1) == 1) & (x["mask_positions"].numpy()[:, 0] == 11)
    assert 60 <= only_last.sum() <= 140


def test_augmentations():
    batch = tf.constant(inputs.pad_left([np.arange(3, 13, dtype=np.int32), arr(5, 6)], 12))
    seed = tf.constant([1, 2], tf.int64)
    crop = augment.random_crop(batch, 0.5, seed).numpy()
    # row 0: 5 contiguous items of 3..12 at the end; row 1: max(1, floor(0.5*2)) = 1 item
    kept = crop[0][crop[0] != 0]
    assert len(kept) == 5 and np.all(np.diff(kept) == 1) and crop[0][-1] != 0
    assert (crop[1] != 0).sum() == 1 and crop[1][-1] in (5, 6)
    reo = augment.random_reorder(batch, 0.6, seed).numpy()
    assert sorted(reo[0][reo[0] != 0]) == list(range(3, 13))       # a permutation of the same items
    moved = np.flatnonzero(reo[0] != batch.numpy()[0])
    assert len(moved) == 0 or moved.max() - moved.min() < 6        # inside one run of floor(0.6*10) = 6
    masked = augment.random_mask(tf.constant(inputs.pad_left([np.arange(3, 203, dtype=np.int32)], 200)), 0.3, seed).numpy()
    assert 30 <= (masked == MASK).sum() <= 90
    again = augment.augment(batch, seed, crop=0.6, mask=0.2, reorder=0.3).numpy()
    np.testing.assert_array_equal(again, augment.augment(batch, seed, crop=0.6, mask=0.2, reorder=0.3).numpy())
    with pytest.raises(TfrecError, match="unknown augmentation 'flip'"):
        inputs.masked_item_dataset([arr(3, 4)], 4, 10, augmentations={"flip": 0.5})


def test_next_item_retrieval_and_rating_datasets(synthetic_prepared):
    users, seqs = inputs.loo_sequences(synthetic_prepared, schema.TRAIN)
    x, y = inputs.next_item_examples(seqs, 10)
    assert len(y) == sum(len(s) - 1 for s in seqs)
    feats, target, weight = next(iter(inputs.next_item_dataset(x, y, batch_size=32, shuffle=False)))
    assert feats[inputs.ITEM_INDICES].shape == (32, 10) and target["items"].shape == (32, 1)
    np.testing.assert_array_equal(target["items"].numpy()[:, 0], y[:32])
    assert np.all(weight.numpy() == 1.0)
    uid = np.repeat(users, [len(s) - 1 for s in seqs])
    r = next(iter(inputs.retrieval_dataset(x, y, uid, batch_size=8, shuffle=False)))
    np.testing.assert_array_equal(r["item_index"].numpy(), y[:8])
    np.testing.assert_array_equal(r["user_index"].numpy(), uid[:8])
    train = synthetic_prepared.split(schema.TRAIN, schema.RANDOM_SPLIT)
    f, rating = next(iter(inputs.rating_dataset(train, batch_size=16, shuffle=False)))
    np.testing.assert_allclose(rating.numpy(), train[schema.RATING].to_numpy()[:16])
    assert set(f) == {"user_index", "item_index", "hour", "weekday"} and f["hour"].numpy().max() < 24


def test_continuation_swap_keeps_newer_half_and_labels_rows():
    seqs = [np.arange(10, 10 + n, dtype=np.int32) * (i + 1) for i, n in enumerate([6, 5, 1, 8])]
    batch = tf.constant(inputs.pad_left(seqs, 10))
    out, cont = augment.swap_older_halves(batch, 1.0, tf.constant([3, 4], tf.int64))
    out, cont = out.numpy(), cont.numpy()
    padded = batch.numpy()
    for i, s in enumerate(seqs):
        donor = seqs[i - 1]                                          # the previous row (the batch rolls by one)
        if len(s) < 2 or len(donor) < 2:                             # nothing to swap
            assert cont[i] == 1.0 and np.array_equal(out[i], padded[i])
            continue
        assert cont[i] == 0.0
        real = out[i][out[i] != 0]
        newer = s[len(s) // 2:]
        np.testing.assert_array_equal(real, np.concatenate([donor[:len(donor) // 2], newer]))
    same, cont0 = augment.swap_older_halves(batch, 0.0, tf.constant([3, 4], tf.int64))
    assert np.all(cont0.numpy() == 1.0) and np.array_equal(same.numpy(), padded)


def test_next_item_sequence_batches_and_trimming():
    seqs = [np.arange(3, 3 + n, dtype=np.int32) for n in (2, 5, 9)] * 10
    ds = inputs.next_item_sequence_dataset(seqs, 12, batch_size=30, prefix_rate=0.0, shuffle=False, trim=True)
    x, y, w = next(iter(ds))
    ids = x[inputs.ITEM_INDICES].numpy()
    assert ids.shape == (30, 9)                                     # trimmed to the longest row (8 + mask slot)
    assert np.all(ids[:, -1] == MASK)
    np.testing.assert_array_equal(y["items"].numpy()[:, 0], [s[-1] for s in seqs])
    np.testing.assert_array_equal(ids[2][ids[2] != 0][:-1], seqs[2][:-1])
    ds = inputs.next_item_sequence_dataset(seqs, 12, batch_size=30, prefix_rate=1.0, shuffle=False, seed=3)
    x, y, _ = next(iter(ds))
    for row, target, s in zip(x[inputs.ITEM_INDICES].numpy(), y["items"].numpy()[:, 0], seqs):
        hist = row[row != 0][:-1]
        k = len(hist)
        assert k < len(s) - 1 or len(s) < 2
        np.testing.assert_array_equal(hist, s[:k])
        assert target == s[k]
    # masked batches: trimmed positions still point at the masked items
    ds = inputs.masked_item_dataset(seqs, 12, 20, batch_size=30, mask_rate=0.4, shuffle=False, trim=True, sort_window=1)
    x, y, w = next(iter(ds))
    ids, pos = x[inputs.ITEM_INDICES].numpy(), x["mask_positions"].numpy()
    for i in range(30):
        k = int(w.numpy()[i].sum())
        assert np.all(ids[i][pos[i][:k]] == MASK)


def test_length_sorted_batches_cover_every_row_once():
    rng = np.random.default_rng(1)
    seqs = [np.full(rng.integers(1, 20), i + 3, np.int32) for i in range(200)]
    ds = inputs.next_item_sequence_dataset(seqs, 20, batch_size=16, prefix_rate=0.0, sort_window=4, trim=True, seed=2)
    seen, widths = [], []
    for x, y, _ in ds:
        widths.append(x[inputs.ITEM_INDICES].shape[1])
        seen += [int(v) for v in y["items"].numpy()[:, 0]]
    assert sorted(seen) == list(range(3, 203))
    assert np.mean(widths) < 15                                      # similar lengths batched together


def test_loo_sequences_histories(synthetic_prepared):
    users, seqs = inputs.loo_sequences(synthetic_prepared, schema.TRAIN)
    valid = inputs.loo_sequences(synthetic_prepared, schema.VALID)
    test = inputs.loo_sequences(synthetic_prepared, schema.TEST)
    by_user = dict(zip(users.tolist(), seqs))
    for u, h, t in zip(valid.user_indices[:20], valid.histories, valid.targets):
        np.testing.assert_array_equal(h, by_user[u])
    for i in range(20):
        u = test.user_indices[i]
        j = list(valid.user_indices).index(u)
        np.testing.assert_array_equal(test.histories[i], np.append(by_user[u], valid.targets[j]))
    full = synthetic_prepared.interactions
    first = full[full[schema.USER_INDEX] == test.user_indices[0]][schema.ITEM_INDEX].to_numpy()
    np.testing.assert_array_equal(np.append(test.histories[0], test.targets[0]), first)
