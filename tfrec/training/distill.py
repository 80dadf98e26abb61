"""A teacher's soft targets for distillation into a next-item model.

``tfrec finetune --teacher DIR`` (``finetune.teacher``) scores every training example
(history ending in the mask slot) with a trained next-item model or ensemble once, before
training, and keeps its `top_k` most likely items with their probabilities (softened by the
temperature, renormalised over those items).  The student then learns that distribution
beside the observed next item (:class:`tfrec.models.objectives.DistillationTask`).
The targets are cached in the run folder, so a resumed run does not score again.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfrec.data import schema  # noqa: E402
from tfrec.errors import TfrecError  # noqa: E402
from tfrec.models import persistence  # noqa: E402
from tfrec.models.tasks import trim_leading_padding  # noqa: E402

CACHE_FILE = "teacher_targets.npz"


def check_teacher(path: str, vocabulary_size: int, fingerprint: str, refit: bool) -> str:
    """The model folder of the teacher at `path` (a run or model folder), once its saved config
    shows it can teach a student on this data: a next-item (or pretrained) model or an ensemble,
    trained on the same prepared dataset, and not refit on the validation items unless the student
    is.  Reads the config only, so a run refuses a wrong teacher before it writes anything."""
    import json

    from tfrec.models.persistence import resolve_model_dir

    model_dir = resolve_model_dir(path)
    try:
        with open(os.path.join(model_dir, persistence.CONFIG_FILE)) as f:
            config = json.load(f)
        vocab = config["backbone"]["vocabulary_size"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TfrecError(f"the teacher's config at {model_dir} cannot be read ({e})") from None
    _check(config, vocab, model_dir, vocabulary_size, fingerprint, refit)
    return model_dir


def _check(config: dict, vocab: int, model_dir: str, vocabulary_size: int, fingerprint: str, refit: bool) -> None:
    if config.get("task") not in set(persistence.MEMBER_TASKS.values()) | {persistence.ENSEMBLE}:
        raise TfrecError(f"the teacher at {model_dir} is a {config.get('task')} model; distillation takes a next-item "
                         "model or an ensemble")
    if config.get("data_fingerprint") and config["data_fingerprint"] != fingerprint:
        raise TfrecError(f"the teacher at {model_dir} was trained on other data; it must share the student's "
                         "prepared dataset")
    if vocab != vocabulary_size:
        raise TfrecError(f"the teacher at {model_dir} has {vocab} item ids and the data "
                         f"{vocabulary_size}; it must be trained on the same prepared dataset")
    if config.get("run_config", {}).get("refit") and not refit:
        raise TfrecError(f"the teacher at {model_dir} was refit on the validation items, so validating the student "
                         "on them would not be held out; distil it with refit too, or use a teacher without refit")


def load_teacher(path: str, vocabulary_size: int, fingerprint: str, refit: bool):
    """The teacher model saved at `path` (a run or model folder), checked against the student's data."""
    from tfrec.models.persistence import resolve_model_dir

    model_dir = resolve_model_dir(path)
    model, config = persistence.load(model_dir)
    _check(config, model.backbone.vocabulary_size, model_dir, vocabulary_size, fingerprint, refit)
    return model, model_dir


def teacher_targets(model, item_ids: np.ndarray, top_k: int, temperature: float = 1.0,
                    batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """``(ids [n, k] int32, probs [n, k] float32)``: each history's `top_k` items by the
    teacher's softened distribution, with their probabilities renormalised to sum to 1.
    The reserved ids (padding, mask) are never targets."""
    vocab = model.backbone.vocabulary_size
    k = min(int(top_k), vocab - schema.NUM_ITEM_RESERVED)
    width = model.backbone.max_len
    reserved = tf.constant(np.arange(vocab) < schema.NUM_ITEM_RESERVED)

    @tf.function(reduce_retracing=True)
    def top(ids):
        scores = tf.nn.log_softmax(model.logits(trim_leading_padding(ids)) / temperature)
        scores = tf.where(reserved[tf.newaxis], tf.fill(tf.shape(scores), tf.constant(-np.inf, scores.dtype)), scores)
        values, index = tf.math.top_k(scores, k=k)
        return tf.cast(index, tf.int32), tf.nn.softmax(values)

    item_ids = np.asarray(item_ids, np.int32)[:, -width:]  # a teacher reading fewer items sees the latest
    ids, probs = [], []
    for i in range(0, len(item_ids), batch_size):
        a, b = top(tf.constant(item_ids[i:i + batch_size]))
        ids.append(a.numpy())
        probs.append(b.numpy())
    if not ids:
        return np.zeros((0, k), np.int32), np.zeros((0, k), np.float32)
    return np.concatenate(ids), np.concatenate(probs)


def cached_teacher_targets(out: str | None, teacher: str, item_ids: np.ndarray, vocabulary_size: int, fingerprint: str,
                           refit: bool, top_k: int, temperature: float, batch_size: int = 1024):
    """:func:`teacher_targets` of the teacher at `teacher`, read from ``out/teacher_targets.npz``
    when an earlier start of the same run wrote them for the same examples (`out` None: no
    cache, as on the non-chief workers of a multi-worker job)."""
    path = os.path.join(out, CACHE_FILE) if out else None
    key = np.frombuffer(f"{os.path.abspath(teacher)}|{top_k}|{temperature}".encode(), np.uint8)
    if path and os.path.isfile(path):
        with np.load(path) as cached:
            if np.array_equal(cached["key"], key) and np.array_equal(cached["examples"], item_ids):
                return cached["ids"], cached["probs"]
    model, model_dir = load_teacher(teacher, vocabulary_size, fingerprint, refit)
    print(f"scoring {len(item_ids):,} training examples with the teacher at {model_dir} "
          f"(top {top_k} items, temperature {temperature:g})", flush=True)
    ids, probs = teacher_targets(model, item_ids, top_k, temperature, batch_size)
    if not path:
        return ids, probs
    tmp = f"{path}.tmp-{os.getpid()}.npz"
    np.savez(tmp, key=key, examples=item_ids, ids=ids, probs=probs)
    os.replace(tmp, path)
    return ids, probs
