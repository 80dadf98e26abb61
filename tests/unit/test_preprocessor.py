"""SequencePreprocessor: lookup, packing, the mask slot and time features, worked out by hand."""

import datetime

import numpy as np
import tensorflow as tf

from tfrec.contract import HOUR, ITEM_INDICES, PADDING_MASK, USER_INDEX, WEEKDAY
from tfrec.data import inputs, schema
from tfrec.data.preprocessor import SequencePreprocessor, pack_histories, time_features


def _vocab(tmp_path, tokens, name="items.txt"):
    path = tmp_path / name
    path.write_text("\n".join(tokens) + "\n")
    return str(path)


def test_histories_are_looked_up_packed_to_the_longest_row_and_end_in_the_mask_slot(tmp_path):
    # item vocabulary: [PAD]=0 [MASK]=1 [OOV]=2 a=3 b=4 c=5 d=6
    items = _vocab(tmp_path, ["[PAD]", "[MASK]", "[OOV]", "a", "b", "c", "d"])
    users = _vocab(tmp_path, ["[PAD]", "[OOV]", "u1"], "users.txt")
    pre = SequencePreprocessor(items, max_len=4, user_vocab=users)
    history = tf.constant([["a", "", "zzz", "b"],  # padding and an unknown id drop out: a b
                           ["", "", "", "c"],  # c
                           ["d", "c", "b", "a"]])  # four known; max_len 4 keeps the newest 3: c b a
    out = pre(history, user_id=tf.constant(["u1", "nobody", ""]), timestamp=tf.constant([0, 3600, 86400], tf.int64))
    # width = min(longest known row 4, max_len - 1 = 3) = 3, then the mask slot (1)
    assert out[ITEM_INDICES].numpy().tolist() == [[0, 3, 4, 1], [0, 0, 5, 1], [5, 4, 3, 1]]
    assert out[PADDING_MASK].numpy().tolist() == [[False, True, True, True], [False, False, True, True],
                                                  [True, True, True, True]]
    assert out[USER_INDEX].numpy().tolist() == [2, 1, 1]  # unknown and empty users: the OOV entry
    assert out[HOUR].numpy().tolist() == [0, 1, 0] and out[WEEKDAY].numpy().tolist() == [3, 3, 4]  # Thu, Thu, Fri
    assert pre.tokens(tf.constant([3, 6])).numpy().tolist() == [b"a", b"d"]
    # an all-padding batch packs to the mask slot alone
    assert pre(tf.constant([[""], [""]]))[ITEM_INDICES].numpy().tolist() == [[1], [1]]


def test_packing_agrees_with_the_training_paths_mask_slot():
    rng = np.random.default_rng(0)
    histories = [rng.integers(schema.NUM_ITEM_RESERVED, 50, size=n).astype(np.int32) for n in (0, 1, 3, 7, 12)]
    max_len = 8
    width = max(len(h) for h in histories)
    ids = np.array([np.r_[np.zeros(width - len(h), np.int32), h] for h in histories])
    packed = pack_histories(ids, ids != 0, max_len).numpy()
    # the training batches: the last max_len - 1 items, then the mask id, left-padded to max_len
    assert packed.tolist() == inputs.with_mask_slot(histories, max_len).tolist()


def test_time_features_are_utc_hour_and_weekday_for_any_timestamp():
    stamps = [0, 1, 3599, 3600, 86_399, 86_400, 1_600_000_000, 1_700_000_123, -1, -86_401]
    got = {k: v.numpy().tolist() for k, v in time_features(tf.constant(stamps, tf.int64)).items()}
    want = [datetime.datetime.fromtimestamp(s, datetime.timezone.utc) for s in stamps]
    assert got[HOUR] == [t.hour for t in want]
    assert got[WEEKDAY] == [t.weekday() for t in want]
    # the numpy path of the training batches is the same function
    assert {k: v.tolist() for k, v in inputs.time_features(np.array(stamps)).items()} == got


def test_the_artifact_is_the_same_preprocessor_and_is_refused_for_another_dataset_or_length(
        tmp_path, synthetic_prepared):
    import shutil

    import pytest

    from tfrec.data import preprocessor
    from tfrec.errors import TfrecError

    data = synthetic_prepared.path
    spec = preprocessor.save_artifact(data, 6, str(tmp_path / "pre"))
    assert spec["max_len"] == 6 and spec["items"] == len(synthetic_prepared.item_vocab)
    # The SavedModel's signature gives what the in-memory preprocessor gives.
    tokens = [synthetic_prepared.item_vocab.token(i) for i in (3, 4, 5, 6, 7, 8, 9)]
    history = tf.constant([tokens, ["", "", "nobody", "", "", "", tokens[0]]])
    saved = tf.saved_model.load(str(tmp_path / "pre")).signatures["preprocess"](history=history)
    direct = SequencePreprocessor(str(tmp_path / "pre" / "assets" / "items.txt"), 6)(history)
    assert saved[ITEM_INDICES].numpy().tolist() == direct[ITEM_INDICES].numpy().tolist() == [
        [5, 6, 7, 8, 9, 1], [0, 0, 0, 0, 3, 1]]
    assert preprocessor.check_artifact(str(tmp_path / "pre"), data, 6)["item_vocab"].endswith("assets/items.txt")
    with pytest.raises(TfrecError, match="max_len 6, the model has 8"):
        preprocessor.check_artifact(str(tmp_path / "pre"), data, 8)
    # Another dataset (its item vocabulary one line longer): refused.
    other = tmp_path / "other"
    shutil.copytree(data, other)
    with open(other / "vocab" / "items.txt", "a") as f:
        f.write("one-more\n")
    with pytest.raises(TfrecError, match="another item vocabulary"):
        preprocessor.check_artifact(str(tmp_path / "pre"), str(other), 6)
    # A vocabulary changed inside the artifact: refused by its checksum.
    with open(tmp_path / "pre" / "assets" / "items.txt", "a") as f:
        f.write("tampered\n")
    with pytest.raises(TfrecError, match="does not match its checksum"):
        preprocessor.read_artifact(str(tmp_path / "pre"))
    with pytest.raises(TfrecError, match="not a preprocessor artifact"):
        preprocessor.read_artifact(str(tmp_path))
