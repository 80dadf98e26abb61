"""Every read of a prepared dataset's test split, counted: ``test_reads.jsonl`` in the dataset's folder
(on a remote store too, where the file is rewritten whole at each read).

A test figure is a held-out estimate only when it was read once, after the settings were chosen on
validation.  Each scoring of the test split (``tfrec evaluate --split test``, the end of a TFRS task run,
the pipeline's evaluate step, the benchmarks through them) appends one line: the time, what was scored,
the hash of its run config and the figures.  ``tfrec data stats DIR`` shows how many reads there were and
by how many distinct configs.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import sys

from tfrec.data.store import Store, is_remote
from tfrec.errors import TfrecError

FILE = "test_reads.jsonl"


def config_hash(config) -> str:
    """A short hash of a run config (a mapping), or of a baseline's name."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def record(data_dir: str, scored: str, config, metrics: dict, task: str) -> None:
    """Appends one read of `data_dir`'s test split.  A dataset folder that cannot be written (a read-only
    copy) gets a warning on stderr; the evaluation itself goes on."""
    line = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "scored": os.path.abspath(scored) if os.path.exists(scored) else scored, "task": task,
            "config_sha256": config_hash(config), "metrics": metrics}
    text = json.dumps(line, sort_keys=True, default=float) + "\n"
    if is_remote(data_dir):  # an object store cannot append: the file is read and written whole
        store = Store(data_dir)
        try:
            old = store.read_bytes(FILE) if store.exists(FILE) else b""
            with store.open_output(FILE) as f:
                f.write(old + text.encode("utf-8"))
        except TfrecError as e:
            print(f"tfrec: warning: this read of the test split could not be recorded in {store.name()} ({e})",
                  file=sys.stderr)
        return
    try:
        with open(os.path.join(data_dir, FILE), "a", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        print(f"tfrec: warning: this read of the test split could not be recorded in {data_dir} ({e.strerror})",
              file=sys.stderr)


def reads(data_dir: str) -> list[dict]:
    """The recorded reads, oldest first (lines that do not parse, from a write cut short, are skipped)."""
    store = Store(data_dir)
    if store.kind(FILE) != "file":
        return []
    out = []
    for text in store.read_text(FILE).splitlines():
        try:
            out.append(json.loads(text))
        except ValueError:
            continue
    return out


def summary(data_dir: str) -> dict:
    """``reads``, distinct ``configs`` and distinct ``scored`` models or baselines of the test split."""
    lines = reads(data_dir)
    return {"reads": len(lines), "configs": len({r.get("config_sha256") for r in lines}),
            "scored": len({r.get("scored") for r in lines})}
