import numpy as np
import pytest

from tfrec.data import schema
from tfrec.data.vocab import Vocabulary
from tfrec.errors import TfrecError


def test_item_vocabulary_reserves_pad_mask_oov():
    v = Vocabulary.by_frequency(["b", "a", "b", "c", "a", "b"], kind="item")
    # counts: b=3, a=2, c=1 -> ids 3, 4, 5 after [PAD]=0, [MASK]=1, [OOV]=2
    assert v.tokens == ["[PAD]", "[MASK]", "[OOV]", "b", "a", "c"]
    assert (schema.PAD_ID, schema.MASK_ID, schema.ITEM_OOV_ID) == (0, 1, 2)
    np.testing.assert_array_equal(v.lookup(["a", "zzz", "c"]), [4, 2, 5])
    assert v.lookup(["a"]).dtype == np.int32


def test_feature_vocabulary_ties_broken_by_token():
    v = Vocabulary.by_frequency(["y", "x", "z", "z"])
    # z=2 first, then the tie x, y in string order; [PAD]=0, [OOV]=1
    assert v.tokens == ["[PAD]", "[OOV]", "z", "x", "y"]
    assert v.index("unknown") == schema.FEATURE_OOV_ID


def test_save_load_round_trip(tmp_path):
    v = Vocabulary.by_frequency(["10", "9", "9"], kind="item")
    p = str(tmp_path / "items.txt")
    v.save(p)
    assert open(p).read() == "[PAD]\n[MASK]\n[OOV]\n9\n10\n"
    w = Vocabulary.load(p, kind="item")
    assert w.tokens == v.tokens and w.oov_id == 2


def test_load_rejects_file_without_reserved_tokens(tmp_path):
    p = tmp_path / "v.txt"
    p.write_text("a\nb\n")
    with pytest.raises(TfrecError, match="reserved tokens"):
        Vocabulary.load(str(p))


def test_duplicate_tokens_rejected():
    with pytest.raises(TfrecError, match="appears twice"):
        Vocabulary.for_features(["a", "a"])
