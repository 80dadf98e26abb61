"""The run scaffold every kind of training shares: the run folder, its identity, resume and finish.

A run folder holds ``run.json`` (the run's identity: stage, settings, data fingerprint; and its status),
the saved model under ``model/``, per-epoch checkpoints, a mid-epoch backup, TensorBoard logs, the
validation record and the final metrics.  Started again with the same identity, a run resumes; with
another, it is refused unless asked to overwrite; a finished run is returned as it is.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time

from tfrec.errors import TfrecError
from tfrec.fileio import write_json
from tfrec.models.persistence import MODEL_DIR

RUN_FILE = "run.json"
BACKUP_DIR = "backup"
CHECKPOINT_DIR = "checkpoints"
LOG_DIR = "logs"
VALIDATION_FILE = "validation.json"
METRICS_FILE = "metrics.json"


def prepare_run_dir(out: str, identity: dict, overwrite: bool, chief: bool = True) -> dict | None:
    """Creates or checks the run folder; returns the finished run's record, if any.

    Only the chief of a multi-worker job touches the folder; the other workers read it."""
    run_path = os.path.join(out, RUN_FILE)
    if not chief:
        if overwrite or not os.path.isfile(run_path):
            return None
        with open(run_path) as f:
            record = json.load(f)
        return record if record.get("status") == "done" and record.get("identity") == identity else None
    if overwrite and os.path.exists(out):
        if os.path.exists(run_path) or not os.listdir(out):
            shutil.rmtree(out)
        else:
            raise TfrecError(f"{out} is not a tfrec run folder; not overwriting it")
    if os.path.isfile(run_path):
        with open(run_path) as f:
            record = json.load(f)
        started = any(os.path.exists(os.path.join(out, p)) for p in (BACKUP_DIR, VALIDATION_FILE, MODEL_DIR))
        if record.get("identity") != identity and not started and record.get("status") != "done":
            write_json(run_path, {"identity": identity, "status": "running", "started": time.time()})
            return None
        if record.get("identity") != identity:
            raise TfrecError(f"{out} holds a run with other data or settings; pass --overwrite to replace it, "
                             "or choose another --out")
        return record if record.get("status") == "done" else None
    if os.path.isdir(out) and os.listdir(out):
        raise TfrecError(f"{out} exists and is not a tfrec run folder; choose an empty or new --out")
    os.makedirs(out, exist_ok=True)
    write_json(run_path, {"identity": identity, "status": "running", "started": time.time()})
    return None


def finish_run(out: str, summary: dict, chief: bool = True) -> dict:
    if not chief:
        return {"status": "done", "summary": summary}
    run_path = os.path.join(out, RUN_FILE)
    with open(run_path) as f:
        record = json.load(f)
    record.update(status="done", finished=time.time(), summary=summary)
    record["resources"] = resources(record)
    write_json(run_path, record)
    shutil.rmtree(os.path.join(out, BACKUP_DIR), ignore_errors=True)
    return record


def resources(record: dict) -> dict:
    """What the run cost, measured by the process that finished it: wall seconds since the run folder was
    started (a resumed run counts its pause too), and this process's CPU seconds and peak resident memory
    (``getrusage``; children such as an export check are not counted)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"wall_seconds": round(record["finished"] - record.get("started", record["finished"]), 3),
            "process_cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
            "process_peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def steps_per_epoch(stage, n_sequences: int) -> int:
    return stage.steps_per_epoch or max(1, math.ceil(n_sequences / stage.batch_size))


PREPROCESSOR_FILE = "preprocessor.json"


def record_preprocessor(path: str, data_dir: str, max_len: int, out: str | None = None,
                        spec: dict | None = None) -> dict:
    """Checks that the preprocessor artifact at `path` belongs to the dataset at `data_dir` and to models of
    length `max_len` (:func:`tfrec.data.preprocessor.check_artifact`); with `out`, writes which one the
    run there used (``preprocessor.json``: its folder and vocabulary checksums).  Returns its spec."""
    from tfrec.data.preprocessor import check_artifact

    spec = spec or check_artifact(path, data_dir, max_len)
    if out is not None:
        write_json(os.path.join(out, PREPROCESSOR_FILE), dict(spec, path=os.path.abspath(path)))
    return spec
