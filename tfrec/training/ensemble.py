"""``tfrec ensemble``: combine saved next-item models into one ensemble model.

The ensemble (:class:`tfrec.models.ensemble.NextItemEnsemble`) is saved like any
trained model, in ``OUT/model``, so ``tfrec evaluate``, ``recommend`` and ``tfrec export``
take it.  When the members were trained on the training part only, each member and the
ensemble are scored on the validation split, and the figures are written to
``OUT/validation.json`` (the test split is not read).
"""

from __future__ import annotations

import os

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
               "refit": refit, "dataset": dataset_dir}
    valid_metrics = None
    if validate and not refit:
        from tfrec.data import inputs
        from tfrec.data.dataset import PreparedDataset

        if not dataset_dir or not os.path.isdir(dataset_dir):
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
    extra = {"dataset": dataset_dir, "data_fingerprint": configs[0].get("data_fingerprint"), "run_config": run_config,
             "member_dirs": summary["members"], "valid_metrics": valid_metrics,
             "parameters": sum(int(c.get("parameters") or 0) for c in configs)}
    persistence.save(ensemble, target, persistence.ENSEMBLE, extra=extra)
    write_json(os.path.join(out, SUMMARY_FILE), summary)
    return summary
