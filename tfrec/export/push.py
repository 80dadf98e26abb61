"""Blessing and push: a candidate export replaces the served version only when it is not worse.

``push(candidate, serving_root, name, metric)`` scores the candidate export and the
version now served under ``ROOT/NAME`` on the validation rows of the candidate's
dataset and split, through their serving signatures (what a client would get), and
copies the candidate in as the next version only if its figure is at least as good
(within `min_delta`).  The copy is written beside the version folders and renamed into
place, so a server polling ``ROOT/NAME`` never sees half a model; the newest `keep`
versions stay.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np

from tfrec import contract
from tfrec.errors import TfrecError
from tfrec.export.exporter import METADATA_FILE, RANKING_TASKS, padded, user_feature_tokens, validation_rows, versions

LOWER_IS_BETTER = ("rmse", "mae", "log_loss")
BATCH = 256


def _metadata(export_dir: str) -> dict:
    path = os.path.join(export_dir, "assets.extra", METADATA_FILE)
    if not os.path.isfile(path):
        raise TfrecError(f"{export_dir} is not a tfrec export: it has no assets.extra/{METADATA_FILE}")
    with open(path) as f:
        return json.load(f)


def _user_inputs(fn, dataset, users):
    """``rows(start, end)``: the user inputs signature `fn` takes for those validation rows, as a client sends
    them: the user id, or for an export without user data the user's own features (none for one that reads
    no user)."""
    import tensorflow as tf

    named = fn.structured_input_signature[1]
    profiles = user_feature_tokens(dataset, list(users)) if contract.USER_FEATURES in named else None

    def rows(start: int, end: int) -> dict:
        out = {}
        if contract.USER_ID in named:
            out[contract.USER_ID] = tf.constant(users[start:end])
        if profiles is not None:
            out[contract.USER_FEATURES] = tf.constant(padded(profiles[start:end]))
        return out

    return rows


def evaluate_export(export_dir: str, data_dir: str | None = None) -> dict:
    """Validation figures of an export, computed through its serving signatures.

    Recommendation exports: HR@10, NDCG@10 and MRR@K of the held-out item in the
    returned top K.  Ranking exports: RMSE and MAE of the score (AUC for like models).
    """
    import tensorflow as tf

    from tfrec.evaluation import ranking
    from tfrec.evaluation.rating import rating_metrics

    from tfrec.data.dataset import PreparedDataset

    meta = _metadata(export_dir)
    dataset = PreparedDataset(data_dir or meta["dataset"])
    rows = validation_rows(dataset, meta["task"], meta["config"])
    histories, users, items = rows["history"], rows["user_id"], rows["item_id"]
    ratings, timestamps = rows["rating"], np.asarray(rows["timestamp"], np.int64)
    loaded = tf.saved_model.load(export_dir)
    if meta["task"] in RANKING_TASKS:
        fn = loaded.signatures["serving_default" if meta["task"] == "ranking" else "rank"]
        user = _user_inputs(fn, dataset, users)
        scores = []
        for s in range(0, len(items), BATCH):
            out = fn(**user(s, s + BATCH), item_id=tf.constant(items[s:s + BATCH]),
                     history=tf.constant(padded(histories[s:s + BATCH])),
                     timestamp=tf.constant(timestamps[s:s + BATCH]))
            scores.append(out["score"].numpy())
        score = np.concatenate(scores)
        binary = meta["config"]["tasks"]["objective"] == "binary"
        if binary:
            score = np.log(np.clip(score, 1e-7, 1 - 1e-7) / np.clip(1 - score, 1e-7, 1))
        return rating_metrics(score, ratings, "binary" if binary else "rating", meta["config"]["tasks"]["like_threshold"])
    fn = loaded.signatures["serving_default"]
    user = _user_inputs(fn, dataset, users)
    ranks = []
    for s in range(0, len(items), BATCH):
        returned = fn(history=tf.constant(padded(histories[s:s + BATCH])), **user(s, s + BATCH))[contract.ITEM_IDS]
        returned = returned.numpy().astype(str)
        k = returned.shape[1]
        for row, target in zip(returned, items[s:s + BATCH]):
            hit = np.flatnonzero(row == target)
            ranks.append(int(hit[0]) if len(hit) else k)  # beyond the top K counts as a miss
    metrics = ranking.metrics_from_ranks(np.asarray(ranks))
    metrics["rows"] = len(ranks)
    return metrics


def push(candidate: str, serving_root: str, name: str, metric: str = "ndcg@10", min_delta: float = 0.0,
         keep: int = 3, data_dir: str | None = None) -> dict:
    """Blesses and pushes `candidate`; returns the decision with both figures."""
    if keep < 1:
        raise TfrecError(f"--keep must be at least 1, got {keep}")
    if not os.path.isdir(candidate):
        raise TfrecError(f"candidate export {candidate} does not exist")
    meta = _metadata(candidate)
    figures = evaluate_export(candidate, data_dir)
    if metric not in figures:
        raise TfrecError(f"metric {metric!r} is not reported for a {meta['task']} export; "
                         f"known: {', '.join(k for k in figures if k != 'rows')}")
    base = os.path.join(serving_root, name)
    present = versions(base)
    decision = {"candidate": os.path.abspath(candidate), "metric": metric, "candidate_value": figures[metric],
                "served_version": present[-1] if present else None, "served_value": None}
    if present:
        served = os.path.join(base, str(present[-1]))
        if _metadata(served)["task"] != meta["task"]:
            raise TfrecError(f"{served} serves a {_metadata(served)['task']} model and the candidate is a "
                             f"{meta['task']} model; push it under another --name")
        decision["served_value"] = evaluate_export(served, data_dir)[metric]
        lower = metric in LOWER_IS_BETTER
        delta = decision["served_value"] - figures[metric] if lower else figures[metric] - decision["served_value"]
        if delta < -min_delta:
            decision.update(pushed=False, reason=f"{metric} {figures[metric]:.4f} is worse than the served "
                                                 f"version's {decision['served_value']:.4f}")
            return decision
    version = (present[-1] + 1) if present else 1
    os.makedirs(base, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=base)
    try:
        copy = os.path.join(staging, "model")
        shutil.copytree(candidate, copy)
        meta_path = os.path.join(copy, "assets.extra", METADATA_FILE)
        with open(meta_path) as f:
            pushed_meta = json.load(f)
        pushed_meta.update(version=version, name=name, blessing={k: v for k, v in decision.items()})
        with open(meta_path, "w") as f:
            json.dump(pushed_meta, f, indent=2, sort_keys=True)
        os.replace(copy, os.path.join(base, str(version)))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for old in versions(base)[:-keep]:
        shutil.rmtree(os.path.join(base, str(old)), ignore_errors=True)
    decision.update(pushed=True, version=version, path=os.path.join(base, str(version)))
    return decision
