"""The preprocessor: from the source's string ids and timestamps to model features, in core TensorFlow ops.

keras-hub puts everything between raw input and a backbone's tensors in one ``Preprocessor`` so that
training and serving cannot compute a feature two ways.  :class:`SequencePreprocessor` is that part of
tfrec: the exported signatures run it in their graphs, and the training paths call the same functions
(:func:`time_features`, :func:`pack_histories`), so a feature is defined once.

- ``lookup``: ``[batch, T]`` string item ids -> int32 vocabulary positions, with a ``known`` mask;
  empty strings (padding) and ids outside the vocabulary are dropped wherever they stand.
- :func:`pack_histories`: the known items of each row, left-packed into a batch no wider than its
  longest history (at most ``max_len - 1``), then the mask slot the next-item heads read.
- :func:`time_features`: hour of day and day of week (UTC, Monday = 0) of unix-second timestamps.

Everything is a core TensorFlow op (``tf.lookup`` tables over the vocabulary files), so an export that
holds a preprocessor loads in stock TensorFlow Serving.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402

from tfrec.contract import HOUR, ITEM_INDICES, PADDING_MASK, USER_INDEX, WEEKDAY  # noqa: E402
from tfrec.data import schema  # noqa: E402
from tfrec.data.raw import sha256  # noqa: E402
from tfrec.errors import TfrecError  # noqa: E402

SECONDS_PER_HOUR = 3_600
SECONDS_PER_DAY = 86_400
EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)


def time_features(timestamp) -> dict:
    """``{hour, weekday}`` int32 tensors of unix-second timestamps (any shape, UTC; Monday = 0)."""
    timestamp = tf.convert_to_tensor(timestamp, tf.int64)
    return {HOUR: tf.cast(tf.math.floormod(timestamp // SECONDS_PER_HOUR, 24), tf.int32),
            WEEKDAY: tf.cast(tf.math.floormod(timestamp // SECONDS_PER_DAY + EPOCH_WEEKDAY, 7), tf.int32)}


def pack_histories(ids, known, max_len: int):
    """``[B, W + 1]`` int32: each row's known items, newest on the right, then the mask slot.

    `ids` ``[B, T]`` int32 and `known` ``[B, T]`` bool (unknown positions may stand anywhere).  ``W`` is
    the largest number of known items in a row, at most ``max_len - 1``: a row keeps its newest ``W``
    known items, left-padded with 0.  Positions count from the right end in the backbone, so a batch
    packed to its longest row scores as a full-width one.
    """
    ids = tf.convert_to_tensor(ids, tf.int32)
    known = tf.convert_to_tensor(known, tf.bool)
    counts = tf.reduce_sum(tf.cast(known, tf.int32), axis=1)
    width = tf.minimum(tf.reduce_max(tf.concat([counts, [0]], axis=0)), max_len - 1)
    after = tf.cumsum(tf.cast(known, tf.int32), axis=1, reverse=True)  # known items at or after each slot
    keep = tf.where(tf.logical_and(known, after <= width))
    column = tf.cast(width - tf.gather_nd(after, keep), tf.int64)
    batch = tf.shape(ids, out_type=tf.int64)[0]
    packed = tf.scatter_nd(tf.stack([keep[:, 0], column], axis=1), tf.gather_nd(ids, keep),
                           tf.stack([batch, tf.cast(width, tf.int64)]))
    slot = tf.fill(tf.stack([batch, tf.constant(1, tf.int64)]), tf.constant(schema.MASK_ID, tf.int32))
    return tf.concat([packed, slot], axis=1)


def _id_table(vocab_file, default: int) -> tf.lookup.StaticHashTable:
    """string id -> vocabulary index (the line number), from a vocabulary file."""
    init = tf.lookup.TextFileInitializer(vocab_file, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
                                         tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER)
    return tf.lookup.StaticHashTable(init, default_value=default)


def _token_table(vocab_file) -> tf.lookup.StaticHashTable:
    init = tf.lookup.TextFileInitializer(vocab_file, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
                                         tf.string, tf.lookup.TextFileIndex.WHOLE_LINE)
    return tf.lookup.StaticHashTable(init, default_value="")


class SequencePreprocessor(tf.Module):
    """String histories (and user ids, timestamps) -> the features a tfrec model reads.

    Args:
        item_vocab: the item vocabulary file (one id a line, reserved entries first), kept as an asset
            when the preprocessor is saved.
        max_len: the backbone's sequence length; a packed history holds at most ``max_len - 1`` items
            and the mask slot.
        user_vocab: the user vocabulary file, for models with user features.
    """

    def __init__(self, item_vocab: str, max_len: int, user_vocab: str | None = None):
        super().__init__()
        self.max_len = int(max_len)
        self.item_vocab = tf.saved_model.Asset(item_vocab)
        self.item_index = _id_table(self.item_vocab, schema.ITEM_OOV_ID)
        self.item_token = _token_table(self.item_vocab)
        self.user_vocab = tf.saved_model.Asset(user_vocab) if user_vocab else None
        self.user_index = _id_table(self.user_vocab, schema.FEATURE_OOV_ID) if user_vocab else None

    def lookup(self, history):
        """``[B, T]`` strings -> (``[B, T]`` int32 positions, 0 where unknown; ``[B, T]`` bool known)."""
        history = tf.convert_to_tensor(history, tf.string)
        ids = tf.cast(self.item_index.lookup(history), tf.int32)
        known = tf.logical_and(tf.not_equal(history, ""), ids >= schema.NUM_ITEM_RESERVED)
        return tf.where(known, ids, tf.zeros_like(ids)), known

    def items(self, item_ids):
        """String ids -> int32 positions (out-of-vocabulary: the OOV entry)."""
        return tf.cast(self.item_index.lookup(tf.convert_to_tensor(item_ids, tf.string)), tf.int32)

    def tokens(self, index):
        """Int positions -> the source's string ids."""
        return self.item_token.lookup(tf.cast(index, tf.int64))

    def users(self, user_id):
        if self.user_index is None:
            raise ValueError("this preprocessor has no user vocabulary")
        return tf.cast(self.user_index.lookup(tf.convert_to_tensor(user_id, tf.string)), tf.int32)

    def __call__(self, history, user_id=None, timestamp=None) -> dict:
        """The model features of a batch: ``item_indices`` (packed, mask slot last) and ``padding_mask``,
        plus ``user_index`` and ``hour``/``weekday`` when `user_id` and `timestamp` are given."""
        ids, known = self.lookup(history)
        packed = pack_histories(ids, known, self.max_len)
        features = {ITEM_INDICES: packed, PADDING_MASK: tf.not_equal(packed, schema.PAD_ID)}
        if user_id is not None:
            features[USER_INDEX] = self.users(user_id)
        if timestamp is not None:
            features.update(time_features(timestamp))
        return features


# ---------------------------------------------------------------------------
# The preprocessor as an artifact: what the pipeline's transform step writes and training and export read

ARTIFACT_SPEC = "preprocessor.json"
ARTIFACT_FORMAT = 1


def save_artifact(data_dir: str, max_len: int, out: str) -> dict:
    """Writes the preprocessor of the prepared dataset at `data_dir` to `out`: a SavedModel (core ops only;
    its vocabularies are assets) whose ``preprocess`` signature turns ``[batch, T]`` string histories into
    ``item_indices`` and ``padding_mask``, and ``preprocessor.json``: ``max_len``, the vocabulary sizes and
    checksums that :func:`check_artifact` compares.  Returns that spec."""
    import json

    vocab = os.path.join(data_dir, schema.VOCAB_DIR)
    items, users = os.path.join(vocab, schema.ITEM_VOCAB_FILE), os.path.join(vocab, schema.USER_VOCAB_FILE)
    if not os.path.isfile(items):
        raise TfrecError(f"{data_dir} has no item vocabulary ({items}); is it a prepared dataset?")
    module = SequencePreprocessor(items, max_len, users if os.path.isfile(users) else None)
    history = tf.TensorSpec([None, None], tf.string, name="history")
    preprocess = tf.function(lambda history: module(history), input_signature=[history])
    tf.saved_model.save(module, out, signatures={"preprocess": preprocess})
    spec = {"format_version": ARTIFACT_FORMAT, "max_len": int(max_len),
            "item_vocab": f"assets/{schema.ITEM_VOCAB_FILE}", "items": _line_count(items), "item_vocab_sha256": sha256(items)}
    if os.path.isfile(users):
        spec.update(user_vocab=f"assets/{schema.USER_VOCAB_FILE}", users=_line_count(users), user_vocab_sha256=sha256(users))
    with open(os.path.join(out, ARTIFACT_SPEC), "w") as f:
        json.dump(spec, f, indent=2, sort_keys=True)
    return spec


def _line_count(path: str) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def read_artifact(path: str) -> dict:
    """The spec of the preprocessor artifact at `path`, its vocabulary paths made absolute and checked."""
    import json

    try:
        with open(os.path.join(path, ARTIFACT_SPEC)) as f:
            spec = json.load(f)
    except (OSError, ValueError) as e:
        raise TfrecError(f"{path} is not a preprocessor artifact (its {ARTIFACT_SPEC} cannot be read: {e})") from None
    if spec.get("format_version") != ARTIFACT_FORMAT:
        raise TfrecError(f"the preprocessor at {path} has format {spec.get('format_version')}; this tfrec reads "
                         f"{ARTIFACT_FORMAT}")
    for key in ("item_vocab", "user_vocab"):
        if key in spec:
            spec[key] = os.path.join(path, spec[key])
            if sha256(spec[key]) != spec[f"{key}_sha256"]:
                raise TfrecError(f"the preprocessor at {path}: {spec[key]} does not match its checksum")
    return spec


def check_artifact(path: str, data_dir: str, max_len: int) -> dict:
    """The spec of the artifact at `path` when it is the preprocessor of the prepared dataset at `data_dir`
    for models of length `max_len`; a TfrecError naming the difference otherwise."""
    from tfrec.data.store import is_remote

    spec = read_artifact(path)
    items = os.path.join(data_dir, schema.VOCAB_DIR, schema.ITEM_VOCAB_FILE)
    if is_remote(data_dir):  # a dataset on a remote store: its vocabulary copied here
        from tfrec.data.dataset import PreparedDataset

        items = PreparedDataset(data_dir).local_file(schema.VOCAB_DIR, schema.ITEM_VOCAB_FILE)
    if not os.path.isfile(items) or sha256(items) != spec["item_vocab_sha256"]:
        raise TfrecError(f"the preprocessor at {path} was made from another item vocabulary than the dataset at "
                         f"{data_dir}'s")
    if spec["max_len"] != int(max_len):
        raise TfrecError(f"the preprocessor at {path} packs histories for max_len {spec['max_len']}, the model "
                         f"has {max_len}")
    return spec
