"""Task splits: which rows train, validate and test, and what each query history holds."""

import numpy as np
import pandas as pd
import pytest

from tfrec.data import schema, task_splits
from tfrec.errors import TfrecError


def frame(rows):
    """rows: (user, item, t, rating) with user/item indices already assigned."""
    df = pd.DataFrame(rows, columns=[schema.USER_INDEX, schema.ITEM_INDEX, schema.TIMESTAMP, schema.RATING])
    return df.sort_values([schema.USER_INDEX, schema.TIMESTAMP], kind="stable").reset_index(drop=True)


def test_leave_self_out_histories_drop_only_the_rows_own_item():
    part = task_splits._leave_self_out(frame([(3, 10, 1, 5.0), (3, 11, 2, 4.0), (3, 12, 3, 3.0), (4, 10, 1, 1.0)]))
    assert part.items.tolist() == [10, 11, 12, 10]
    assert [h.tolist() for h in part.histories] == [[11, 12], [10, 12], [10, 11], []]
    assert part.ratings.tolist() == [5.0, 4.0, 3.0, 1.0]


def test_query_ids_end_in_the_mask_slot_and_keep_the_latest_items():
    part = task_splits._leave_self_out(frame([(3, i, i, 1.0) for i in range(10, 16)]))
    ids = part.query_ids(4)
    # row 0 leaves out item 10: history 11..15, of which the last 3, then the mask id
    assert ids[0].tolist() == [13, 14, 15, schema.MASK_ID]
    assert ids[5].tolist() == [12, 13, 14, schema.MASK_ID]


@pytest.mark.parametrize("scheme", ["random", "cold", "loo"])
def test_schemes_keep_test_rows_out_of_training(synthetic_prepared, scheme):
    split = task_splits.load(synthetic_prepared, scheme, seed=0, valid_fraction=0.1)
    train_rows = set(zip(split.train.users.tolist(), split.train.items.tolist(), split.train.timestamps.tolist()))
    assert len(split.train) and len(split.valid) and len(split.test)
    if scheme == "random":
        # the random test rows are exactly the prepared split's; valid rows come out of its train part
        test = synthetic_prepared.split(schema.TEST, "random")
        assert len(split.test) == len(test)
        assert len(split.train) + len(split.valid) == len(synthetic_prepared.split(schema.TRAIN, "random"))
        # a test row's history is all of the user's training items, in time order
        fit = dict(zip(*np.unique(split.train.users, return_counts=True)))
        assert all(len(h) == fit.get(u, 0) for u, h in zip(split.test.users.tolist(), split.test.histories))
    if scheme == "cold":
        cold = set(split.cold_items.tolist())
        n_items = synthetic_prepared.stats["num_items"]
        assert len(cold) == round(0.1 * n_items)
        assert not cold & set(split.train.items.tolist()) and not cold & set(split.valid.items.tolist())
        assert not any(cold & set(h.tolist()) for h in split.train.histories + split.test.histories)
        assert set(split.test.items.tolist()) <= cold and split.candidates.tolist() == sorted(cold)
    if scheme == "loo":
        # a training row's history is the user's items before it (a prefix)
        seqs = dict(zip(split.train_users.tolist(), split.train_sequences))
        u, h, i = split.train.users[5], split.train.histories[5], split.train.items[5]
        assert seqs[u][:len(h)].tolist() == h.tolist() and seqs[u][len(h)] == i
        assert (split.test.users.tolist(), split.test.items.tolist()) == \
            (synthetic_prepared.split(schema.TEST)[schema.USER_INDEX].tolist(),
             synthetic_prepared.split(schema.TEST)[schema.ITEM_INDEX].tolist())
    if scheme != "loo":
        # held-back validation rows never train
        valid_rows = set(zip(split.valid.users.tolist(), split.valid.items.tolist(), split.valid.timestamps.tolist()))
        assert valid_rows and not valid_rows & train_rows


def test_validation_rows_depend_on_the_seed_only(synthetic_prepared):
    a = task_splits.load(synthetic_prepared, "random", seed=1)
    b = task_splits.load(synthetic_prepared, "random", seed=1)
    c = task_splits.load(synthetic_prepared, "random", seed=2)
    assert a.valid.items.tolist() == b.valid.items.tolist()
    assert a.valid.items.tolist() != c.valid.items.tolist()


def test_eval_sequences_keep_one_row_per_user(synthetic_prepared):
    split = task_splits.load(synthetic_prepared, "random", seed=0)
    seqs = task_splits.eval_sequences(split.valid, limit=1)
    assert len(seqs.user_indices) == len(np.unique(split.valid.users)) == len(set(seqs.user_indices.tolist()))


def test_unknown_scheme_is_one_sentence(synthetic_prepared):
    with pytest.raises(TfrecError, match="unknown split scheme 'weekly'"):
        task_splits.load(synthetic_prepared, "weekly")


def test_label_scarce_draws_keep_a_seeded_share_of_users_and_rows(synthetic_prepared):
    from tfrec.data.sequences import label_rows, label_users

    users = np.array([7, 3, 3, 9, 1, 5, 8, 2, 6, 4])  # 9 distinct users, one repeated
    kept = label_users(users, 0.25, seed=0)
    assert len(kept) == 3 and set(kept) <= set(users.tolist()) and kept.tolist() == sorted(kept.tolist())
    assert label_users(users, 0.25, seed=0).tolist() == kept.tolist()  # the draw depends on the seed only
    assert any(label_users(users, 0.25, seed=s).tolist() != kept.tolist() for s in range(1, 5))
    assert label_users(users, 1.0, seed=0).tolist() == list(range(1, 10))
    assert len(label_users(users, 0.01, seed=0)) == 1  # never nothing
    rows = label_rows(10, 0.5, seed=0)
    assert len(rows) == 5 and rows.tolist() == sorted(set(rows.tolist())) and rows.max() < 10
    # a task split's training rows: a share kept, validation, test and the histories untouched
    split = task_splits.load(synthetic_prepared, "random", seed=0, valid_fraction=0.1)
    part = task_splits.label_part(split, 0.1, seed=0)
    assert len(part.train) == int(np.ceil(0.1 * len(split.train)))
    assert part.valid is split.valid and part.test is split.test and part.train_sequences is split.train_sequences
    whole = set(zip(split.train.users.tolist(), split.train.items.tolist(), split.train.timestamps.tolist()))
    assert set(zip(part.train.users.tolist(), part.train.items.tolist(), part.train.timestamps.tolist())) <= whole
    assert task_splits.label_part(split, 1.0, seed=0) is split
