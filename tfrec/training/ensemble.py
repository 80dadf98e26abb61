"""``tfrec ensemble``: combine saved next-item models into one ensemble model.

The ensemble (:class:`tfrec.models.ensemble.NextItemEnsemble`) is saved like any
trained model, in ``OUT/model``, so ``tfrec evaluate``, ``recommend`` and ``tfrec export``
take it.  When the members were trained on the training part only, each member and the
ensemble are scored on the validation split, and the figures are written to
``OUT/validation.json`` (the test split is not read).
"""

from __future__ import annotations

import os

from tfrec.data.store import display, is_remote
from tfrec.errors import TfrecError

MODEL_DIR = "model"
SUMMARY_FILE = "validation.json"


def combine(model_dirs: list[str], out: str, member_weights: list[float] | None = None, data_dir: str | None = None,
            overwrite: bool = False, validate: bool = True, batch_size: int = 1024) -> dict:
    """Saves the ensemble of the models at `model_dirs` to ``out/model``; returns a summary
    (members, weights, and validation figures when the members were not refit)."""
    from tfrec.data import schema
    from tfrec.evaluation import ranking
    from tfrec.models import persistence
    from tfrec.models.ensemble import NextItemEnsemble
    from tfrec.evaluation.ranking import model_scorer
    from tfrec.fileio import write_json
    from tfrec.models.persistence import resolve_model_dir

    if len(model_dirs) < 2:
        raise TfrecError("an ensemble needs at least two --models")
    target = os.path.join(out, MODEL_DIR)
    if os.path.exists(target) and not overwrite:
        raise TfrecError(f"{target} exists; pass --overwrite to replace it")
    resolved = [resolve_model_dir(d) for d in model_dirs]
    if len(set(map(os.path.abspath, resolved))) < len(resolved):
        raise TfrecError("the same model is named twice; an ensemble combines different models")
    members, configs = [], []
    for path in resolved:
        model, config = persistence.load(path)
        if config["task"] not in persistence.MEMBER_TASKS.values():
            raise TfrecError(f"the model at {path} is a {config['task']} model; an ensemble combines next-item "
                             "(or pretrained) models")
        members.append(model)
        configs.append(config)
    prints = {c.get("data_fingerprint") for c in configs}
    if len(prints) > 1:
        raise TfrecError(f"the models were trained on different data ({resolved[0]} and another); "
                         "an ensemble's models must share one prepared dataset")
    try:
        ensemble = NextItemEnsemble(members, member_weights)
    except ValueError as e:
        raise TfrecError(str(e)) from None
    refit = any(c.get("run_config", {}).get("refit") for c in configs)
    run_config = dict(configs[0].get("run_config", {}), refit=refit)
    dataset_dir = data_dir or configs[0].get("dataset")
    summary = {"members": [os.path.abspath(p) for p in resolved], "member_weights": ensemble.member_weights,
               "refit": refit, "dataset": display(dataset_dir) if dataset_dir else dataset_dir}
    valid_metrics = None
    if validate and not refit:
        from tfrec.data import inputs
        from tfrec.data.dataset import PreparedDataset

        if not dataset_dir or not (is_remote(dataset_dir) or os.path.isdir(dataset_dir)):
            raise TfrecError(f"the members' dataset {dataset_dir!r} is not there; pass --data DIR")
        dataset = PreparedDataset(dataset_dir)
        if len(dataset.item_vocab) != ensemble.backbone.vocabulary_size:
            raise TfrecError(f"the dataset at {dataset_dir} has {len(dataset.item_vocab)} item ids and the models "
                             f"{ensemble.backbone.vocabulary_size}; pass the --data they were trained on")
        valid = inputs.loo_sequences(dataset, schema.VALID)
        figures = []
        for model in members + [ensemble]:
            metrics, _ = ranking.evaluate(model_scorer(model, ensemble.backbone.max_len, batch_size),
                                          valid.histories, valid.targets, batch_size=batch_size)
            figures.append(metrics)
        summary["member_valid_metrics"] = figures[:-1]
        summary["valid_metrics"] = valid_metrics = figures[-1]
    extra = {"dataset": display(dataset_dir), "data_fingerprint": configs[0].get("data_fingerprint"), "run_config": run_config,
             "member_dirs": summary["members"], "valid_metrics": valid_metrics,
             "parameters": sum(int(c.get("parameters") or 0) for c in configs)}
    persistence.save(ensemble, target, persistence.ENSEMBLE, extra=extra)
    write_json(os.path.join(out, SUMMARY_FILE), summary)
    return summary


SEARCH_FILE = "search.json"


def search(model_dirs: list[str], out: str, data_dir: str | None = None, max_rounds: int = 10,
           batch_size: int = 1024, log=print) -> dict:
    """Chooses an ensemble's members and weights on the validation split: greedy forward selection with
    replacement (Caruana et al., "Ensemble selection from libraries of models", 2004).  It starts from the
    best single model by validation NDCG@10 and adds, one round at a time, the candidate (any of them,
    again or not) whose log-probabilities most raise the ensemble's validation NDCG@10; it stops when no
    candidate raises it or after `max_rounds` additions.  A member's weight is how many times it was added.
    The test split is not read.  Writes ``OUT/search.json`` (every round's candidates and figures) and
    returns it with ``members`` and ``weights``: what :func:`combine` then saves."""
    import tempfile

    import numpy as np

    from tfrec.data import inputs, schema
    from tfrec.data.dataset import PreparedDataset
    from tfrec.evaluation import ranking
    from tfrec.fileio import write_json
    from tfrec.models import persistence
    from tfrec.models.persistence import resolve_model_dir

    if len(model_dirs) < 2:
        raise TfrecError("an ensemble search needs at least two candidate --models")
    if max_rounds < 1:
        raise TfrecError(f"--max-rounds must be at least 1, got {max_rounds}")
    resolved = [os.path.abspath(resolve_model_dir(d)) for d in model_dirs]
    if len(set(resolved)) < len(resolved):
        raise TfrecError("the same model is named twice among the candidates")
    configs = [persistence.load(p)[1] for p in resolved]
    for path, config in zip(resolved, configs):
        if config.get("run_config", {}).get("refit"):
            raise TfrecError(f"the model at {path} was refit on the validation items, so they cannot choose among "
                             "the candidates; search over models trained on the training part")
    dataset_dir = data_dir or configs[0].get("dataset")
    if not dataset_dir or not (is_remote(dataset_dir) or os.path.isdir(dataset_dir)):
        raise TfrecError(f"the candidates' dataset {dataset_dir!r} is not there; pass --data DIR")
    valid = inputs.loo_sequences(PreparedDataset(dataset_dir), schema.VALID)
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".search-") as scratch:
        # Each candidate's validation log-probabilities, once, on disk (a catalogue of 12k items and 22k
        # users is 1 GB a model), so that a round only adds arrays.
        logp = []
        for i, path in enumerate(resolved):
            model, _ = persistence.load(path)
            scorer = ranking.model_scorer(model, model.backbone.max_len, batch_size)
            first = np.asarray(scorer(valid.histories[:1]))
            table = np.lib.format.open_memmap(os.path.join(scratch, f"{i}.npy"), "w+", np.float32,
                                              (len(valid.targets), first.shape[1]))
            for start in range(0, len(valid.targets), batch_size):
                scores = np.asarray(scorer(valid.histories[start:start + batch_size]), np.float64)
                scores -= scores.max(axis=1, keepdims=True)
                table[start:start + batch_size] = scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))
            table.flush()
            logp.append(table)
            log(f"candidate {i}: {path}")

        def ndcg(counts: np.ndarray) -> dict:
            ranks = np.zeros(len(valid.targets), np.int64)
            for start in range(0, len(valid.targets), batch_size):
                rows = slice(start, start + batch_size)
                total = sum(c * logp[i][rows].astype(np.float32) for i, c in enumerate(counts) if c)
                ranks[rows] = ranking.target_ranks(total / counts.sum(), valid.targets[rows],
                                                   valid.histories[rows])
            return ranking.metrics_from_ranks(ranks)

        singles = [ndcg(np.eye(len(resolved), dtype=np.int64)[i]) for i in range(len(resolved))]
        best_i = int(np.argmax([m["ndcg@10"] for m in singles]))
        counts = np.eye(len(resolved), dtype=np.int64)[best_i]
        best = singles[best_i]
        rounds = [{"round": 0, "added": best_i, "valid": best,
                   "candidates": [{"model": i, "ndcg@10": m["ndcg@10"]} for i, m in enumerate(singles)]}]
        log(f"round 0: start from candidate {best_i}, validation NDCG@10 {best['ndcg@10']:.4f}")
        for round_number in range(1, max_rounds + 1):
            tried = [ndcg(counts + np.eye(len(resolved), dtype=np.int64)[i]) for i in range(len(resolved))]
            pick = int(np.argmax([m["ndcg@10"] for m in tried]))
            entry = {"round": round_number, "candidates": [{"model": i, "ndcg@10": m["ndcg@10"]}
                                                           for i, m in enumerate(tried)]}
            if tried[pick]["ndcg@10"] <= best["ndcg@10"]:
                entry["added"] = None
                rounds.append(entry)
                log(f"round {round_number}: no candidate raises validation NDCG@10; stopping")
                break
            counts[pick] += 1
            best = tried[pick]
            rounds.append(dict(entry, added=pick, valid=best))
            log(f"round {round_number}: add candidate {pick}, validation NDCG@10 {best['ndcg@10']:.4f}")
        logp.clear()  # drop the maps before their folder goes
    chosen = [i for i, c in enumerate(counts) if c]
    result = {"candidates": resolved, "members": [resolved[i] for i in chosen],
              "weights": [float(counts[i]) for i in chosen], "valid": best, "single_valid": singles,
              "rounds": rounds, "method": "greedy forward selection with replacement on validation NDCG@10",
              "dataset": dataset_dir, "test_read": False}
    write_json(os.path.join(out, SEARCH_FILE), result)
    return result
