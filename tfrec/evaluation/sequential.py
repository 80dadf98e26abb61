"""Leave-one-out evaluation of a saved next-item model (or a baseline) on a prepared dataset.

Writes ``<out>.json`` (metrics, split, model, dataset) and ``<out>.md`` (a Markdown
table), plus, on request, ``<out>.per_user.csv`` (user, target item, 0-based rank).
Model selection reads the validation split only; the test split is for the end.
"""

from __future__ import annotations

import os
import time

import numpy as np

from tfrec import contract
from tfrec.data import inputs, schema
from tfrec.data.dataset import PreparedDataset
from tfrec.errors import TfrecError
from tfrec.evaluation import beyond_accuracy, ranking

METRIC_ORDER = ("hr@1", "hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr")
POPULARITY, GROUP_POPULARITY = "popularity", "popularity-by-group"
BASELINES = (POPULARITY, GROUP_POPULARITY)
LIST_K = 10  # the length of the lists the beyond-accuracy measures and fairness slices judge


def markdown_table(rows: list[tuple[str, dict]], columns=METRIC_ORDER) -> str:
    head = "| model | " + " | ".join(c.upper() if c != "mrr" else "MRR" for c in columns) + " | users |"
    sep = "|---|" + "---:|" * (len(columns) + 1)
    lines = [head, sep]
    for name, m in rows:
        lines.append(f"| {name} | " + " | ".join(f"{m[c]:.4f}" for c in columns) + f" | {m.get('users', '')} |")
    return "\n".join(lines) + "\n"


def beyond_accuracy_markdown(report: dict) -> str:
    """The report's list measures and fairness slices as two Markdown tables ("" when it has neither)."""
    out = []
    b = report.get("beyond_accuracy")
    if b:
        k = b["k"]
        cells = [b[f"coverage@{k}"], b[f"gini@{k}"], b.get("diversity_embeddings"), b.get("diversity_attributes"),
                 b["novelty"], b["average_popularity"], b["tail_share"]]
        out += [f"| coverage@{k} | Gini@{k} | diversity (embeddings) | diversity (attributes) | novelty (bits) "
                "| average popularity | tail share |", "|" + "---:|" * 7,
                "| " + " | ".join("n/a" if c is None else f"{c:.4f}" for c in cells) + " |", ""]
    f = report.get("fairness")
    if f:
        out += ["| users by | groups | lowest NDCG@10 | highest NDCG@10 | largest gap |", "|---|---:|---|---|---:|"]
        for name, s in f.items():
            g = s["groups"]
            out.append(f"| {name} | {len(g)} | {g[s['worst']]['ndcg@10']:.4f} ({s['worst']}, {g[s['worst']]['users']} users) | "
                       f"{g[s['best']]['ndcg@10']:.4f} ({s['best']}, {g[s['best']]['users']} users) | {s['largest_gap']:.4f} |")
        out.append("")
    return "\n".join(out)


def evaluate_saved(model: str | None, data_dir: str, split: str = schema.VALID, baseline: str | None = None,
                   exclude_history: bool = True, batch_size: int = 1024,
                   rerank: dict | None = None, history_length: int | None = None,
                   ) -> tuple[dict, np.ndarray, inputs.EvalSequences]:
    """Metrics, per-user ranks and the sequences of `split` for a saved model or a baseline; with
    `rerank` (``{"diversity": λ, "popularity_penalty": p}``) the model's lists re-ranked as its export's
    ``rerank`` signature re-ranks them (:mod:`tfrec.models.reranking`); with `history_length` n each
    user's history cut to its last n items (0: none), as a new user with n interactions would be seen.

    Baselines: ``popularity`` (training counts), ``popularity-by-group`` (training counts among the users
    of the same demographic group: gender and age band, where the dataset has them)."""
    if split not in (schema.VALID, schema.TEST):
        raise TfrecError(f"unknown split {split!r}; use valid or test")
    dataset = PreparedDataset(data_dir)
    full = seqs = inputs.loo_sequences(dataset, split)
    if not len(seqs.targets):
        raise TfrecError(f"the {split} split of {data_dir} is empty")
    if history_length is not None:
        if history_length < 0:
            raise TfrecError(f"a history length is a number of items, 0 or more; got {history_length}")
        seqs = inputs.EvalSequences(seqs.user_indices, [h[len(h) - history_length:] if history_length else h[:0]
                                                        for h in seqs.histories], seqs.targets)
    vocab = len(dataset.item_vocab)
    train_users, train = inputs.loo_sequences(dataset, schema.TRAIN)  # the baselines, lists and slices read it
    retrieval = False
    if baseline:
        if baseline not in BASELINES:
            raise TfrecError(f"unknown baseline {baseline!r}; known: {', '.join(BASELINES)}")
        scorer = (group_popularity(dataset, train_users, train, seqs, vocab) if baseline == GROUP_POPULARITY
                  else ranking.popularity_scorer(train, vocab))
        name = baseline
    else:
        from tfrec.models import persistence
        from tfrec.evaluation.ranking import model_scorer
        from tfrec.models.persistence import resolve_model_dir

        model_dir = resolve_model_dir(model)
        loaded, config = persistence.load(model_dir)
        if split == schema.VALID and config.get("run_config", {}).get("refit"):
            raise TfrecError(f"the model at {model_dir} was refit on the validation items, so its validation figures "
                             "are not held out; evaluate it on the test split")
        retrieval = config.get("task") == contract.RETRIEVAL
        scheme = config.get("run_config", {}).get("split", schema.LEAVE_ONE_OUT)
        if not (hasattr(loaded, "score") or (retrieval and scheme == schema.LEAVE_ONE_OUT)):
            raise TfrecError(f"the model at {model_dir} is a {config['task']} model"
                             + (f" trained on the {scheme} split" if retrieval else "")
                             + "; tfrec evaluate scores next-item and pretrained models, and retrieval models "
                             f"trained on the leave-one-out split; a {config['task']} run writes its test figures "
                             "to metrics.json in its run folder")
        if loaded.backbone.vocabulary_size != vocab:
            raise TfrecError(f"the model at {model_dir} has {loaded.backbone.vocabulary_size} item ids but the dataset "
                             f"at {data_dir} has {vocab}; it was trained on other data")
        scorer = (ranking.retrieval_scorer(loaded, loaded.backbone.max_len, batch_size) if retrieval
                  else model_scorer(loaded, loaded.backbone.max_len, batch_size))
        name = model
    reranker = None
    if rerank:
        if baseline:
            raise TfrecError("--rerank re-ranks a model's lists by its item vectors; a baseline has none")
        reranker = model_reranker(loaded, train, vocab, rerank)
    start = time.perf_counter()
    if callable(scorer):
        ranks, lists = ranking.ranked(scorer, seqs.histories, seqs.targets, exclude_history=exclude_history,
                                      batch_size=batch_size, top_k=LIST_K, reranker=reranker,
                                      users=seqs.user_indices if retrieval else None)
    else:  # one scorer per group of users
        ranks, lists = np.zeros(len(seqs.targets), np.int64), np.zeros((len(seqs.targets), LIST_K), np.int64)
        for rows, group_scorer in scorer:
            ranks[rows], lists[rows] = ranking.ranked(group_scorer, [seqs.histories[i] for i in rows],
                                                      seqs.targets[rows], exclude_history=exclude_history,
                                                      batch_size=batch_size, top_k=LIST_K)
    metrics = dict(ranking.metrics_from_ranks(ranks), users=int(len(ranks)))
    embeddings = None if baseline else np.asarray(
        loaded.candidate_matrix()[:, :-1] if retrieval else loaded.backbone.output_item_embeddings())
    beyond = beyond_accuracy_report(dataset, train, lists, embeddings)
    fairness = beyond_accuracy.slice_metrics(ranks, user_groups(dataset, full), k=LIST_K)
    slices = None if baseline else label_slices(config, train_users, seqs, ranks)
    if split == schema.TEST:
        from tfrec.evaluation import test_reads

        test_reads.record(data_dir, model_dir if not baseline else baseline,
                          baseline if baseline else config.get("run_config", config), metrics,
                          contract.RETRIEVAL if retrieval else contract.NEXT_ITEM)
    report = {"model": name, "dataset": data_dir, "split": split, "exclude_history": exclude_history,
              "metrics": metrics, "seconds": time.perf_counter() - start, "protocol":
              "leave-one-out, full ranking over every item" + (", history items excluded" if exclude_history else "")}
    report.update(beyond_accuracy=beyond, fairness=fairness)
    if history_length is not None:
        report["history_length"] = history_length
        report["protocol"] += f"; each history cut to its last {history_length} items (new users)"
    if rerank:
        report["rerank"] = dict(rerank)
        report["protocol"] += (f"; re-ranked ({', '.join(f'{k} {v:g}' for k, v in rerank.items())}): HR and NDCG "
                               f"exact to {ranking.RERANKED}, MRR a bound")
    if slices:
        report["metrics_by_users"] = slices
    return report, ranks, seqs


def demographic_labels(dataset: PreparedDataset, seqs: inputs.EvalSequences) -> np.ndarray:
    """Each user's demographic group, "gender / age band" from the user table ("" where unknown)."""
    groups = user_groups(dataset, seqs)
    parts = [groups[name] for name in (schema.GENDER, "age band") if name in groups]
    if not parts:
        raise TfrecError(f"the dataset at {dataset.path} has no user gender or age: popularity-by-group needs them")
    return np.array([" / ".join(p) if all(p) else "" for p in zip(*parts)], dtype=object)


def group_popularity(dataset: PreparedDataset, train_users: np.ndarray, train, seqs: inputs.EvalSequences,
                     vocab: int) -> list:
    """``[(rows of seqs, scorer)]``: the training popularity among the users of each demographic group
    (users of no known group: over everyone)."""
    own = demographic_labels(dataset, seqs)
    label_of = dict(zip(seqs.user_indices.tolist(), own.tolist()))
    train_labels = np.array([label_of.get(int(u), "") for u in train_users], dtype=object)
    out = []
    for label in sorted(set(own.tolist())):
        rows = np.flatnonzero(own == label)
        members = [s for s, lab in zip(train, train_labels) if lab == label] if label else list(train)
        out.append((rows, ranking.popularity_scorer(members or list(train), vocab)))
    return out


def model_reranker(model, train, vocab: int, knobs: dict) -> ranking.Reranker:
    """The re-ranker of `model`'s export (:func:`tfrec.models.reranking.rerank`, the same function) with
    the item vectors it serves and popularity levels from the leave-one-out training sequences `train`
    (`vocab` item ids)."""
    from tfrec.contract import RERANK_KNOBS
    from tfrec.models import reranking

    unknown = sorted(set(knobs) - set(RERANK_KNOBS))
    if unknown:
        raise TfrecError(f"unknown re-ranking knob {unknown[0]!r}; use {' or '.join(RERANK_KNOBS)}")
    diversity, penalty = float(knobs.get(RERANK_KNOBS[0], 0.0)), float(knobs.get(RERANK_KNOBS[1], 0.0))
    if not 0 <= diversity <= 1:
        raise TfrecError(f"diversity must be between 0 and 1, got {diversity:g}")
    if penalty < 0:
        raise TfrecError(f"popularity_penalty must be at least 0, got {penalty:g}")
    vectors = reranking.similarity_vectors(model)
    interactions = beyond_accuracy.interaction_counts(train, vocab)
    return lambda scores, histories, length: reranking.rerank_numpy(scores, vectors, interactions, histories,
                                                                    length, diversity, penalty)


def beyond_accuracy_report(dataset: PreparedDataset, train, lists: np.ndarray, embeddings: np.ndarray | None) -> dict:
    """:func:`tfrec.evaluation.beyond_accuracy.list_metrics` of top-K `lists` against the training
    sequences `train`, with diversity over `embeddings` (a model's output item vectors) and over the
    items' categorical and list attributes where the dataset has them."""
    table, space, columns = dataset.item_feature_table()
    attributes = beyond_accuracy.attribute_vectors(table, space) if columns else None
    out = beyond_accuracy.list_metrics(lists, train, len(dataset.item_vocab), embeddings, attributes)
    out["k"], out["attribute_columns"] = int(lists.shape[1]), columns
    return out


def user_groups(dataset: PreparedDataset, seqs: inputs.EvalSequences) -> dict[str, np.ndarray]:
    """Labels that group the evaluated users: activity quartiles of their history length on every dataset;
    each categorical user feature (gender, occupation) and, from a numeric ``age``, MovieLens age bands
    where the dataset has them ("" = unknown)."""
    groups = {"activity": beyond_accuracy.activity_labels([len(h) for h in seqs.histories])}
    users = dataset.users
    if users is None:
        return groups
    row = dict(zip(users[schema.USER_INDEX].tolist(), range(len(users))))
    where = [row.get(int(u)) for u in seqs.user_indices]
    for name, feature in dataset.user_features.items():
        if feature["kind"] == "categorical":
            values = users[name].astype(object).where(users[name].notna(), "").tolist()
            groups[name] = np.array([values[w] if w is not None else "" for w in where], dtype=object)
        elif feature["kind"] == "numeric" and name == schema.AGE:
            ages = users[name].tolist()
            groups["age band"] = np.array([beyond_accuracy.age_band(ages[w]) if w is not None else "" for w in where],
                                          dtype=object)
    return groups


def label_slices(config: dict, train_users: np.ndarray, seqs: inputs.EvalSequences, ranks: np.ndarray) -> dict | None:
    """For a model fine-tuned on a share of the users (``finetune.fraction`` < 1): the same read's figures
    over the users whose examples fine-tuning learnt from and over those it never saw."""
    run_config = config.get("run_config", {})
    fraction = run_config.get("finetune", {}).get("fraction", 1.0)
    if fraction >= 1 or config.get("task") != contract.NEXT_ITEM:
        return None
    seen = np.isin(seqs.user_indices, inputs.label_users(train_users, fraction, run_config.get("seed", 0)))
    return {name: dict(ranking.metrics_from_ranks(ranks[mask]), users=int(mask.sum()))
            for name, mask in (("fine-tuned users", seen), ("users fine-tuning never saw", ~seen)) if mask.any()}


def write_report(report: dict, ranks: np.ndarray, seqs: inputs.EvalSequences, out: str, per_user: bool,
                 dataset: PreparedDataset | None = None) -> list[str]:
    """Writes the JSON and Markdown files (and per-user CSV); returns their paths."""
    from tfrec.fileio import write_json

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    paths = [f"{out}.json", f"{out}.md"]
    write_json(paths[0], report)
    title = f"{report['split']} split of {report['dataset']} ({report['protocol']})\n\n"
    tmp = f"{paths[1]}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(title + markdown_table([(str(report["model"]), report["metrics"])]) + "\n"
                + beyond_accuracy_markdown(report))
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


def recommend(model: str, data_dir: str, history, k: int = 10, exclude_history: bool = True,
              rerank: dict | None = None):
    """The top `k` items of a saved next-item model for one history of item ids (oldest first); with
    `rerank` (``{"diversity": λ, "popularity_penalty": p}``) re-ranked as the export's ``rerank``
    signature and ``tfrec evaluate --rerank`` re-rank them.

    Returns a pandas DataFrame with ``rank``, ``item_id``, ``score`` (the model's logit) and,
    where the dataset's item table has one, ``title``.  Unknown item ids are an error.
    """
    import pandas as pd

    from tfrec.models import persistence
    from tfrec.models.persistence import resolve_model_dir

    dataset = PreparedDataset(data_dir)
    vocab = dataset.item_vocab
    history = [str(i) for i in history]
    unknown = [i for i in history if i not in vocab]
    if unknown:
        raise TfrecError(f"item {unknown[0]!r} is not in the item vocabulary of {data_dir}")
    if k < 1:
        raise TfrecError(f"k must be at least 1, got {k}")
    model_dir = resolve_model_dir(model)
    loaded, config = persistence.load(model_dir)
    if not hasattr(loaded, "score"):
        raise TfrecError(f"the model at {model_dir} is a {config['task']} model; recommend() needs a next-item model")
    if loaded.backbone.vocabulary_size != len(vocab):
        raise TfrecError(f"the model at {model_dir} has {loaded.backbone.vocabulary_size} item ids but the dataset "
                         f"at {data_dir} has {len(vocab)}; it was trained on other data")
    # The same preprocessor the export's signatures run: string ids looked up, packed, the mask slot.
    import tensorflow as tf

    from tfrec.data.preprocessor import SequencePreprocessor

    pre = SequencePreprocessor(dataset.local_file(schema.VOCAB_DIR, schema.ITEM_VOCAB_FILE),
                               loaded.backbone.max_len)
    packed = pre(tf.constant([history], tf.string, shape=(1, len(history))))[inputs.ITEM_INDICES].numpy()
    ids = vocab.lookup(history)
    scores = loaded.score(packed)[0].astype(np.float64)
    scores[:schema.NUM_ITEM_RESERVED] = -np.inf
    if exclude_history and len(ids):
        scores[ids] = -np.inf
    k = min(k, int(np.isfinite(scores).sum()))
    if rerank:
        _, train = inputs.loo_sequences(dataset, schema.TRAIN)
        reranker = model_reranker(loaded, train, len(vocab), rerank)
        top = reranker(scores[np.newaxis].astype(np.float32), [np.asarray(ids)], k)[0]
    else:
        top = np.argsort(-scores, kind="stable")[:k]
    table = pd.DataFrame({"rank": np.arange(1, k + 1), "item_id": [vocab.token(i) for i in top],
                          "score": scores[top]})
    items = dataset.items
    if items is not None and "title" in items.columns:
        titles = dict(zip(items["item_id"].astype(str), items["title"].astype(str)))
        table["title"] = [titles.get(i, "") for i in table["item_id"]]
    return table
