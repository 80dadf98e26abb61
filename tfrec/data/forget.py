"""``tfrec data forget``: users removed from a prepared dataset, and the runs and exports trained on it.

Forgetting prepares the dataset again from its own interactions without those users, with the settings it
was prepared with: vocabularies, splits and statistics come out as if the users had never been in the
source (a k-core may then drop more).  ``dataset.json`` records how many users were forgotten, never who.
Runs and exports keep what they learned from the old data: :func:`trained_on` finds them by the data
fingerprint they recorded, so that they can be retrained (and old exports removed).
"""

from __future__ import annotations

import json
import os

from tfrec.data import dataset, preprocess, schema
from tfrec.data.raw import RawDataset
from tfrec.errors import TfrecError

RUN_FILE = "run.json"
EXPORT_FILE = os.path.join("assets.extra", "tfrec_model.json")
_SKIP = {"checkpoints", "backup", "logs", "variables", "sequences", "splits", "vocab"}


def forget(path: str, users: list[str]) -> tuple[dataset.PreparedDataset, str, int]:
    """Removes `users` (source ids) from the prepared dataset at `path`, in place.

    Returns the new dataset, the old dataset's fingerprint and how many interactions were removed.
    """
    old = dataset.PreparedDataset(path)
    wanted = list(dict.fromkeys(str(u) for u in users))
    if not wanted:
        raise TfrecError("name at least one user to forget (--user ID)")
    missing = [u for u in wanted if u not in old.user_vocab]
    if missing:
        raise TfrecError(f"user {missing[0]!r} is not in the prepared dataset at {path}")
    fingerprint = old.fingerprint
    inter = old.interactions
    gone = inter[schema.USER_ID].isin(wanted).to_numpy()
    columns = [c for c in (*schema.INTERACTION_COLUMNS, schema.RATING) if c in inter.columns]
    kept = inter.loc[~gone, columns].reset_index(drop=True)
    items = None if old.items is None else old.items.drop(columns=[schema.ITEM_INDEX])
    users_table = None if old.users is None else old.users.drop(columns=[schema.USER_INDEX])
    if users_table is not None:
        users_table = users_table[~users_table[schema.USER_ID].isin(wanted)].reset_index(drop=True)
    meta = old.meta
    derived = dict(meta.get("derived", {}))
    derived["forgotten_users"] = int(derived.get("forgotten_users", 0)) + len(wanted)
    raw = RawDataset(meta["source"], kept, items, users_table, dict(meta.get("input_checksums", {})),
                     timestamp_kind=meta.get("timestamp_kind", "unix_seconds"), derived=derived)
    config = preprocess.PrepareConfig(**meta["settings"])
    return dataset.prepare(raw, path, config), fingerprint, int(gone.sum())


def trained_on(fingerprint: str, roots: list[str]) -> list[tuple[str, str]]:
    """``(kind, folder)`` of every run (``run.json``) and export (``assets.extra/tfrec_model.json``) under
    `roots` that recorded `fingerprint` as its training data; kinds: ``run``, ``export``."""
    found = []
    for root in roots:
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in _SKIP and not d.startswith("."))
            if RUN_FILE in files:
                record = _read(os.path.join(folder, RUN_FILE))
                if record.get("identity", {}).get("data") == fingerprint:
                    found.append(("run", folder))
            if os.path.isfile(os.path.join(folder, EXPORT_FILE)):
                if _read(os.path.join(folder, EXPORT_FILE)).get("data_fingerprint") == fingerprint:
                    found.append(("export", folder))
    return sorted(set(found), key=lambda kv: kv[1])


def _read(path: str) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
