"""Hyperparameter search on the validation split (``tfrec tune``), driven by Optuna.

A search space is a YAML mapping from dotted config keys to what a trial may set them to::

    finetune.learning_rate: {low: 0.0003, high: 0.003, log: true}
    finetune.contrastive_weight: {low: 0.0, high: 0.3}
    model.dropout: {choices: [0.1, 0.2, 0.3]}
    finetune.batch_size: {low: 128, high: 512, step: 128}

Ranges take the type of the key's default (an integer key gets integers); ``choices`` takes any values.
Each trial fine-tunes the base config with its settings into ``WORKDIR/trials/<number>`` and reports the
run's validation figure (next-item: NDCG@10; retrieval: top-K accuracy; ranking: RMSE or AUC) after
every validated epoch, so the pruner (median or Hyperband) stops trials that trail the others.  A trial
never reads the test split.  The study lives in Optuna's storage: an SQLite file in the study folder by
default, so a killed search started again goes on where it stopped (a trial that was running when the
search was killed is marked failed by its stopped heartbeat and run again); any SQLAlchemy URL
(PostgreSQL, MySQL) lets several machines work on one study.  At the end ``best.yaml`` (the base config
with the best trial's settings) and ``tuning.json`` (every trial) are written to the workdir.  When the
base config's values of the searched keys lie inside the space, the first trial runs them, so the search
reports how far the best trial is from the base and never picks something worse on validation.
"""

from __future__ import annotations

import json
import os
import time

from tfrec import contract
from tfrec.errors import TfrecError
from tfrec.fileio import write_json
from tfrec.training.config import RunConfig, read_mapping

SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "none")
STUDY_FILE = "study.db"
BEST_FILE = "best.yaml"
REPORT_FILE = "tuning.json"
HEARTBEAT_SECONDS = 10


def load_space(path_or_mapping, base: RunConfig) -> dict[str, dict]:
    """The search space of a YAML file (or a mapping), each key checked against `base`'s settings."""
    space = read_mapping(path_or_mapping) if isinstance(path_or_mapping, str) else dict(path_or_mapping)
    where = path_or_mapping if isinstance(path_or_mapping, str) else "search space"
    if not space:
        raise TfrecError(f"{where}: the search space is empty; give at least one setting to search")
    defaults = base.to_dict()
    out = {}
    for key, spec in space.items():
        node = defaults
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise TfrecError(f"{where}: {key} is not a setting of the run config")
            node = node[part]
        if not isinstance(spec, dict) or not ({"choices"} <= set(spec) or {"low", "high"} <= set(spec)):
            raise TfrecError(f"{where}: {key} needs either choices: [...] or low: and high:")
        unknown = set(spec) - {"choices", "low", "high", "log", "step"}
        if unknown:
            raise TfrecError(f"{where}: {key} has unknown field {sorted(unknown)[0]!r} (choices, low, high, log, step)")
        if "choices" in spec:
            if not isinstance(spec["choices"], list) or not spec["choices"]:
                raise TfrecError(f"{where}: {key}: choices must be a non-empty list")
            out[key] = {"choices": list(spec["choices"])}
            continue
        if isinstance(node, bool) or not isinstance(node, (int, float)):
            raise TfrecError(f"{where}: {key} is not numeric; search it with choices: [...]")
        kind = int if isinstance(node, int) else float
        low, high = spec["low"], spec["high"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or low >= high:
            raise TfrecError(f"{where}: {key}: low and high must be numbers with low < high")
        if spec.get("log") and low <= 0:
            raise TfrecError(f"{where}: {key}: a log range needs low > 0")
        if kind is int and (int(low) != low or int(high) != high):
            raise TfrecError(f"{where}: {key} is an integer setting; low and high must be integers")
        out[key] = {"kind": kind.__name__, "low": kind(low), "high": kind(high), "log": bool(spec.get("log", False)),
                    "step": spec.get("step")}
    base.updated({k: (v["choices"][0] if "choices" in v else v["low"]) for k, v in out.items()}, where=where)
    return out


def base_point(space: dict, base: RunConfig) -> dict | None:
    """The base config's own values of the searched keys, when every one lies inside the space (then the
    study's first trial is the base config, so ``best.yaml`` is never worse than it on validation)."""
    values = base.to_dict()
    point = {}
    for key, spec in space.items():
        node = values
        for part in key.split("."):
            node = node[part]
        if "choices" in spec:
            if node not in spec["choices"]:
                return None
        else:
            if isinstance(node, bool) or not isinstance(node, (int, float)) or not spec["low"] <= node <= spec["high"]:
                return None
            step = spec["step"]
            if step and abs((node - spec["low"]) / step - round((node - spec["low"]) / step)) > 1e-9:
                return None
        point[key] = node
    return point


def suggest(trial, space: dict) -> dict:
    """One trial's settings."""
    params = {}
    for key, spec in space.items():
        if "choices" in spec:
            params[key] = trial.suggest_categorical(key, spec["choices"])
        elif spec["kind"] == "int":
            params[key] = trial.suggest_int(key, spec["low"], spec["high"], step=spec["step"] or 1, log=spec["log"])
        else:
            params[key] = trial.suggest_float(key, spec["low"], spec["high"], step=spec["step"], log=spec["log"])
    return params


def _storage(study: str):
    """(Optuna storage, workdir) of `study`: a folder (its SQLite file) or an SQLAlchemy URL."""
    import optuna

    if "://" in study:
        url, folder = study, None
    else:
        os.makedirs(study, exist_ok=True)
        url, folder = f"sqlite:///{os.path.abspath(os.path.join(study, STUDY_FILE))}", study
    import warnings

    try:
        with warnings.catch_warnings():  # heartbeats are marked experimental; they are what makes resuming work
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(
                url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=3 * HEARTBEAT_SECONDS,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2))
    except Exception as e:  # a bad URL, a missing driver, an unreachable server
        raise TfrecError(f"cannot open the study storage {study}: {e}") from None
    return storage, folder


def _reporter(trial, key: str, mode: str):
    """A Keras callback that reports a run's validation figure `key` to its Optuna trial after every
    validated epoch, keeps the best, and stops the run when the pruner says so."""
    import tensorflow as tf

    class Reporter(tf.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.best, self.pruned = None, False

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(key)
            if value is None:  # an epoch that was not validated
                return
            value = float(value)
            if self.best is None or (value > self.best if mode == "max" else value < self.best):
                self.best = value
            trial.report(value, epoch)
            if trial.should_prune():
                self.pruned = True
                self.model.stop_training = True

    return Reporter()


def tune(task: str, data_dir: str, base: RunConfig, space: dict, trials: int, study: str,
         workdir: str | None = None, pretrained: str | None = None, sampler: str = "tpe", pruner: str = "median",
         study_name: str | None = None, seed: int | None = None, log=print) -> dict:
    """Searches `space` around `base` for `task` until `trials` trials have finished (completed or
    pruned) in the study; returns the report also written to ``tuning.json``."""
    import optuna

    if task not in contract.TASKS:
        raise TfrecError(f"unknown task {task!r}; known: {', '.join(contract.TASKS)}")
    if sampler not in SAMPLERS or pruner not in PRUNERS:
        raise TfrecError(f"--sampler is one of {', '.join(SAMPLERS)} and --pruner one of {', '.join(PRUNERS)}")
    if trials < 1:
        raise TfrecError(f"--trials must be at least 1, got {trials}")
    if base.refit:
        raise TfrecError("a search selects on the validation split; refit trains on it, so tune with refit: false")
    storage, folder = _storage(study)
    workdir = workdir or folder
    if not workdir:
        raise TfrecError("with a study URL, pass --workdir: the folder the trials' runs go to")
    os.makedirs(os.path.join(workdir, "trials"), exist_ok=True)
    from tfrec.data.dataset import PreparedDataset
    from tfrec.data import schema
    from tfrec.training.finetuning import finetune, monitored_figure

    num_items = len(PreparedDataset(data_dir).item_vocab) - schema.NUM_ITEM_RESERVED
    key, mode = monitored_figure(task, base, num_items)
    seed = base.seed if seed is None else seed
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        the_study = optuna.create_study(
            storage=storage, study_name=study_name or f"tfrec-{task}", load_if_exists=True,
            direction="maximize" if mode == "max" else "minimize",
            sampler=optuna.samplers.TPESampler(seed=seed) if sampler == "tpe" else optuna.samplers.RandomSampler(seed),
            pruner={"median": optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
                    "hyperband": optuna.pruners.HyperbandPruner(),
                    "none": optuna.pruners.NopPruner()}[pruner])
    except Exception as e:
        raise TfrecError(f"cannot create or open the study in {study}: {e}") from None
    recorded_space = the_study.user_attrs.get("space")
    if recorded_space is None:
        the_study.set_user_attr("space", json.loads(json.dumps(space)))
        the_study.set_user_attr("base", base.to_dict())
        the_study.set_user_attr("task", task)
        first = base_point(space, base)
        if first is not None:
            the_study.enqueue_trial(first)
            log(f"trial 0 is the base config's own settings: {json.dumps(first)}")
    elif recorded_space != json.loads(json.dumps(space)) or the_study.user_attrs.get("task") != task:
        raise TfrecError(f"the study in {study} searched another task or space; start a new study (another "
                         "--study folder or --study-name) for this one")

    def finished() -> int:
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        return len(the_study.get_trials(deepcopy=False, states=states))

    def objective(trial):
        params = suggest(trial, space)
        config = base.updated(params, where=f"trial {trial.number}")
        out = os.path.join(workdir, "trials", str(trial.number))
        trial.set_user_attr("run", os.path.abspath(out))
        reporter = _reporter(trial, key, mode)
        log(f"trial {trial.number}: {json.dumps(params)}")
        start = time.perf_counter()
        import tensorflow as tf

        tf.keras.backend.clear_session()  # one process runs every trial: drop the last trial's graph
        finetune(data_dir, out, config, pretrained=pretrained, task=task, overwrite=True, verbose=0,
                 callbacks=[reporter], score_test=False)
        trial.set_user_attr("seconds", time.perf_counter() - start)
        if reporter.best is None:
            raise TfrecError(f"trial {trial.number} reported no validation figure {key}")
        log(f"trial {trial.number}: {key} {reporter.best:.4f}" + (" (pruned)" if reporter.pruned else ""))
        if reporter.pruned:
            raise optuna.TrialPruned()
        return reporter.best

    while finished() < trials:
        the_study.optimize(objective, n_trials=trials - finished(), catch=())
    return _report(the_study, base, space, task, key, mode, workdir, log)


def _report(study, base: RunConfig, space: dict, task: str, key: str, mode: str, workdir: str, log) -> dict:
    import optuna
    import yaml

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise TfrecError("no trial completed (every one was pruned or failed); widen the space or add trials")
    best = study.best_trial
    best_config = base.updated(best.params, where="best trial")
    with open(os.path.join(workdir, BEST_FILE + ".tmp"), "w") as f:
        f.write(f"# tfrec tune: the best of {len(complete)} completed trials of task {task}, chosen on validation "
                f"{key} = {best.value:.4f} (trial {best.number}); the test split was not read.\n")
        yaml.safe_dump(best_config.to_dict(), f, sort_keys=False)
    os.replace(os.path.join(workdir, BEST_FILE + ".tmp"), os.path.join(workdir, BEST_FILE))
    report = {"task": task, "monitor": key, "direction": mode, "best": {"number": best.number, "value": best.value,
                                                                         "params": best.params,
                                                                         "run": best.user_attrs.get("run")},
              "space": space, "trials": [{"number": t.number, "state": t.state.name, "value": t.value,
                                          "params": t.params, "seconds": t.user_attrs.get("seconds"),
                                          "reported": {str(k): v for k, v in t.intermediate_values.items()}}
                                         for t in study.get_trials(deepcopy=False)]}
    write_json(os.path.join(workdir, REPORT_FILE), report)
    log(f"best: trial {best.number}, validation {key} {best.value:.4f}, {json.dumps(best.params)}; "
        f"config {os.path.join(workdir, BEST_FILE)}")
    return report
