"""Runs a tfrec pipeline (``tfrec pipeline``, or ``python -m pipelines.run`` from a checkout):

    tfrec pipeline --config pipelines/configs/movielens-100k.yaml \
        [--data-dir DIR] [--pipeline-root DIR] [--serving-root DIR] [--from-step STEP]

Each step writes ``PIPELINE_ROOT/<step>/<run_id>/``; the run id hashes the step's
settings and inputs, so a step whose inputs and settings have not changed is skipped
(``--from-step`` reruns from that step on).  A step works in a hidden folder that is
renamed into place only when it succeeds: a failing step stops the run with one
sentence and leaves no partial artifact.  Every run writes a manifest
(``PIPELINE_ROOT/manifests/<time>.json``, and ``manifest.json`` for the latest) with each
step's inputs, outputs, run id, settings, timing and whether it ran or was cached.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import sys
import time

# Where a pipeline config's run_config file name is looked for, after the working directory and the
# pipeline config's own folder: the run configs shipped inside the package (tfrec/configs/).
PACKAGED_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
OUTPUTS_FILE = "_outputs.json"


def _hash_path(h, path: str) -> None:
    """Feeds the names and contents of the files at `path` (a file or a folder) into `h`."""
    if os.path.isfile(path):
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return
    for folder, dirs, files in sorted(os.walk(path)):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(folder, name)
            h.update(os.path.relpath(full, path).encode())
            _hash_path(h, full)


def run_id(step, upstream_ids: dict) -> str:
    from tfrec import __version__

    h = hashlib.sha256(json.dumps({"step": step.name, "settings": step.settings, "upstream": upstream_ids,
                                   "tfrec": __version__}, sort_keys=True, default=str).encode())
    if step.name == "ingest" and step.settings.get("path") and os.path.exists(step.settings["path"]):
        _hash_path(h, step.settings["path"])
    return h.hexdigest()[:12]


def load_config(path: str, data_dir: str | None, pipeline_root: str | None, serving_root: str | None,
                run_config_file: str | None = None):
    """The :class:`PipelineConfig` of the file at `path`; `run_config_file`, when given, replaces its
    ``run_config``.  A relative ``data.path`` is under `data_dir` (default ``$TFREC_DATA_DIR``); without
    either, a named source is read from its cache (downloaded on first use)."""
    from tfrec.pipeline.definition import PipelineConfig
    from tfrec.errors import TfrecError
    from tfrec.training.config import RunConfig, read_mapping

    raw = read_mapping(path)
    missing = [k for k in ("name", "data", "run_config", "tasks", "export") if k not in raw]
    if missing:
        raise TfrecError(f"pipeline config {path} lacks {', '.join(missing)}")
    for section, known in (("export", ("task", "name", "top_k", "explain_window")),
                           ("push", ("metric", "min_delta", "keep"))):
        value = raw.get(section) or {}
        if not isinstance(value, dict):
            raise TfrecError(f"pipeline config {path}: {section} must be a mapping of {', '.join(known)}")
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise TfrecError(f"pipeline config {path}: unknown {section} setting(s) {', '.join(map(str, unknown))}; "
                             f"the settings are {', '.join(known)}")
    if "name" not in raw["export"]:
        raise TfrecError(f"pipeline config {path}: export lacks name")
    run_config = run_config_file or raw["run_config"]
    if isinstance(run_config, str):
        candidates = [os.path.abspath(run_config), os.path.join(os.path.dirname(os.path.abspath(path)), run_config),
                      os.path.join(PACKAGED_CONFIGS, os.path.basename(run_config))]
        found = next((c for c in candidates if os.path.isfile(c)), None)
        if not found:
            raise TfrecError(f"pipeline config {path}: run_config {run_config} does not exist")
        run_config = read_mapping(found)
    config = RunConfig.from_dict(run_config, where=f"{path}: run_config").updated(raw.get("overrides") or {},
                                                                                   where=f"{path}: overrides")
    name = raw["name"]
    data_dir = data_dir or os.environ.get("TFREC_DATA_DIR")
    return PipelineConfig(
        name=name, data=raw["data"], run_config=config.to_dict(), tasks=tuple(raw["tasks"]), export=raw["export"],
        push=raw.get("push") or {}, data_dir=os.path.abspath(data_dir) if data_dir else None,
        pipeline_root=os.path.abspath(pipeline_root or os.path.join("artifacts", "pipelines", name)),
        serving_root=os.path.abspath(serving_root or os.path.join("artifacts", "serving")))


def execute(config, from_step: str | None = None, log=print) -> dict:
    """Runs the steps of ``create_pipeline(config)``; returns the manifest."""
    from tfrec.pipeline.definition import STEP_NAMES, create_pipeline
    from tfrec.errors import TfrecError

    if from_step and from_step not in STEP_NAMES:
        raise TfrecError(f"unknown step {from_step!r}; the steps are {', '.join(STEP_NAMES)}")
    root = config.pipeline_root
    started = datetime.datetime.now(datetime.timezone.utc)
    manifest = {"pipeline": config.name, "started": started.isoformat(timespec="seconds"),
                "pipeline_root": root, "serving_root": config.serving_root, "steps": [], "status": "running"}
    ids, dirs, force = {}, {}, False
    try:
        for step in create_pipeline(config):
            force = force or step.name == from_step
            ids[step.name] = run_id(step, {u: ids[u] for u in step.upstream})
            out = os.path.join(root, step.name, ids[step.name])
            dirs[step.name] = out
            entry = {"step": step.name, "run_id": ids[step.name], "output_dir": out,
                     "inputs": {u: dirs[u] for u in step.upstream}, "settings": step.settings}
            start = time.perf_counter()
            if os.path.isfile(os.path.join(out, OUTPUTS_FILE)) and not force:
                with open(os.path.join(out, OUTPUTS_FILE)) as f:
                    entry.update(status="cached", outputs=json.load(f))
                log(f"pipeline {config.name}: {step.name} unchanged ({ids[step.name]}), skipped")
            else:
                log(f"pipeline {config.name}: {step.name} running ({ids[step.name]})")
                staging = os.path.join(root, step.name, f".tmp-{ids[step.name]}")
                shutil.rmtree(staging, ignore_errors=True)
                os.makedirs(staging)
                try:
                    outputs = step.fn(entry["inputs"], staging, step.settings)
                    outputs = json.loads(json.dumps(outputs, default=str).replace(staging, out))
                    with open(os.path.join(staging, OUTPUTS_FILE), "w") as f:
                        json.dump(outputs, f, indent=2, sort_keys=True)
                    shutil.rmtree(out, ignore_errors=True)
                    os.replace(staging, out)
                except BaseException as e:
                    shutil.rmtree(staging, ignore_errors=True)
                    message = str(e) if isinstance(e, TfrecError) else f"{type(e).__name__}: {e}"
                    entry.update(status="failed", error=message, seconds=time.perf_counter() - start)
                    manifest["steps"].append(entry)
                    raise TfrecError(f"pipeline step {step.name} failed: {message}") from None
                entry.update(status="ran", outputs=outputs)
            entry["seconds"] = time.perf_counter() - start
            manifest["steps"].append(entry)
        manifest["status"] = "done"
    except Exception:
        manifest["status"] = "failed"
        raise
    finally:
        manifest["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        os.makedirs(os.path.join(root, "manifests"), exist_ok=True)
        stamp = started.strftime("%Y%m%dT%H%M%S%f")
        for path in (os.path.join(root, "manifests", f"{stamp}.json"), os.path.join(root, "manifest.json")):
            with open(path + ".tmp", "w") as f:
                json.dump(manifest, f, indent=2, sort_keys=True, default=str)
            os.replace(path + ".tmp", path)
    return manifest


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The options of ``tfrec pipeline`` (and ``python -m pipelines.run``)."""
    ap.add_argument("--config", required=True, help="pipeline config (pipelines/configs/*.yaml)")
    ap.add_argument("--data-dir", help="folder of the raw datasets a relative data.path is under (default "
                                       "$TFREC_DATA_DIR)")
    ap.add_argument("--pipeline-root", help="artifacts folder (default artifacts/pipelines/<name>)")
    ap.add_argument("--serving-root", help="model base folder root the push step writes (default artifacts/serving)")
    ap.add_argument("--from-step", help="rerun this step and every later one even if unchanged")


def run(args) -> int:
    """Runs the pipeline `args` name; 0 when every step is done (TfrecError for a user's mistake)."""
    config = load_config(args.config, args.data_dir, args.pipeline_root, args.serving_root)
    manifest = execute(config, args.from_step, log=lambda m: print(m, flush=True))
    ran = [s["step"] for s in manifest["steps"] if s["status"] == "ran"]
    print(f"pipeline {config.name} done: ran {', '.join(ran) or 'nothing'}; manifest "
          f"{os.path.join(config.pipeline_root, 'manifest.json')}")
    return 0


def main(argv=None, prog: str = "tfrec pipeline") -> int:
    import tfrec  # noqa: F401  (pins Keras 2 before TensorFlow is imported)
    from tfrec.allocator import keep_freed_memory
    from tfrec.errors import TfrecError

    keep_freed_memory()
    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    args = ap.parse_args(argv)
    try:
        return run(args)
    except TfrecError as e:
        print(f"pipeline: error: {e}", file=sys.stderr)
        return 2
