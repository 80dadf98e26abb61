"""Leave-one-out evaluation of a saved next-item model (or a baseline) on a prepared dataset.

Writes ``<out>.json`` (metrics, split, model, dataset) and ``<out>.md`` (a Markdown
table), plus, on request, ``<out>.per_user.csv`` (user, target item, 0-based rank).
Model selection reads the validation split only; the test split is for the end.
"""

from __future__ import annotations

import os
import time

import numpy as np

from tfrec.data import inputs, schema
from tfrec.data.dataset import PreparedDataset
from tfrec.errors import TfrecError
from tfrec.evaluation import ranking

METRIC_ORDER = ("hr@1", "hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr")
BASELINES = ("popularity",)


def markdown_table(rows: list[tuple[str, dict]], columns=METRIC_ORDER) -> str:
    head = "| model | " + " | ".join(c.upper() if c != "mrr" else "MRR" for c in columns) + " | users |"
    sep = "|---|" + "---:|" * (len(columns) + 1)
    lines = [head, sep]
    for name, m in rows:
        lines.append(f"| {name} | " + " | ".join(f"{m[c]:.4f}" for c in columns) + f" | {m.get('users', '')} |")
    return "\n".join(lines) + "\n"


def evaluate_saved(model: str | None, data_dir: str, split: str = schema.VALID, baseline: str | None = None,
                   exclude_history: bool = True, batch_size: int = 1024) -> tuple[dict, np.ndarray, inputs.EvalSequences]:
    """Metrics, per-user ranks and the sequences of `split` for a saved model or a baseline."""
    if split not in (schema.VALID, schema.TEST):
        raise TfrecError(f"unknown split {split!r}; use valid or test")
    dataset = PreparedDataset(data_dir)
    seqs = inputs.loo_sequences(dataset, split)
    if not len(seqs.targets):
        raise TfrecError(f"the {split} split of {data_dir} is empty")
    vocab = len(dataset.item_vocab)
    if baseline:
        if baseline not in BASELINES:
            raise TfrecError(f"unknown baseline {baseline!r}; known: {', '.join(BASELINES)}")
        _, train = inputs.loo_sequences(dataset, schema.TRAIN)
        scorer = ranking.popularity_scorer(train, vocab)
        name = baseline
    else:
        from tfrec.models import persistence
        from tfrec.training.trainer import model_scorer, resolve_model_dir

        model_dir = resolve_model_dir(model)
        loaded, config = persistence.load(model_dir)
        if not hasattr(loaded, "score"):
            raise TfrecError(f"the model at {model_dir} is a {config['task']} model; tfrec evaluate scores next-item "
                             f"and pretrained models, and a {config['task']} run writes its test figures to "
                             "metrics.json in its run folder")
        if loaded.backbone.vocabulary_size != vocab:
            raise TfrecError(f"the model at {model_dir} has {loaded.backbone.vocabulary_size} item ids but the dataset "
                             f"at {data_dir} has {vocab}; it was trained on other data")
        scorer = model_scorer(loaded, loaded.backbone.max_len, batch_size)
        name = model
    start = time.perf_counter()
    metrics, ranks = ranking.evaluate(scorer, seqs.histories, seqs.targets, exclude_history=exclude_history,
                                      batch_size=batch_size)
    report = {"model": name, "dataset": data_dir, "split": split, "exclude_history": exclude_history,
              "metrics": metrics, "seconds": time.perf_counter() - start, "protocol":
              "leave-one-out, full ranking over every item" + (", history items excluded" if exclude_history else "")}
    return report, ranks, seqs


def write_report(report: dict, ranks: np.ndarray, seqs: inputs.EvalSequences, out: str, per_user: bool,
                 dataset: PreparedDataset | None = None) -> list[str]:
    """Writes the JSON and Markdown files (and per-user CSV); returns their paths."""
    from tfrec.training.trainer import write_json

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    paths = [f"{out}.json", f"{out}.md"]
    write_json(paths[0], report)
    title = f"{report['split']} split of {report['dataset']} ({report['protocol']})\n\n"
    tmp = f"{paths[1]}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(title + markdown_table([(str(report["model"]), report["metrics"])]))
    os.replace(tmp, paths[1])
    if per_user:
        import pandas as pd

        dataset = dataset or PreparedDataset(report["dataset"])
        frame = pd.DataFrame({
            "user_id": [dataset.user_vocab.token(int(u)) for u in seqs.user_indices],
            "target_item_id": [dataset.item_vocab.token(int(t)) for t in seqs.targets],
            "rank": ranks.astype(np.int64),
        })
        path = f"{out}.per_user.csv"
        frame.to_csv(f"{path}.tmp-{os.getpid()}", index=False)
        os.replace(f"{path}.tmp-{os.getpid()}", path)
        paths.append(path)
    return paths
