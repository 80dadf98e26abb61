"""Fine-tuning runs of the TFRS tasks: retrieval, ranking, cold-start and multitask.

Same run folder as :mod:`tfrec.training.trainer` (run.json, model/, checkpoints/,
backup/, logs/, validation.json, metrics.json).  Validation uses Keras
``validation_data`` (the TFRS metrics: ``FactorizedTopK`` top-k accuracy, RMSE/MAE or
AUC) on rows held back from training; the best epoch is kept and early stopping
watches its figure.  The test split is scored once, after training, with the best
weights, next to the baselines it must beat.
"""

from __future__ import annotations

import math
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfrec import contract  # noqa: E402
from tfrec.data import inputs, schema, task_splits  # noqa: E402
from tfrec.data.dataset import PreparedDataset  # noqa: E402
from tfrec.data.store import display  # noqa: E402
from tfrec.errors import TfrecError  # noqa: E402
from tfrec.evaluation import ranking  # noqa: E402
from tfrec.evaluation import test_reads  # noqa: E402
from tfrec.evaluation.rating import rating_metrics  # noqa: E402
from tfrec.models import adapters, persistence  # noqa: E402
from tfrec.models.recommender import (  # noqa: E402
    HOUR, RATING, RETRIEVAL_KS, TASK_WEIGHTS, WEEKDAY, RecommenderModel)
from tfrec.models.tasks import count_parameters  # noqa: E402
from tfrec.fileio import write_json  # noqa: E402
from tfrec.training import cluster, pooled, privacy, runs, trainer  # noqa: E402
from tfrec.training.callbacks import Backup, EpochCheckpoint, EpochSelection  # noqa: E402
from tfrec.training.config import RunConfig  # noqa: E402

TASKS = tuple(TASK_WEIGHTS)
TOP_KS = (1, 5, 10, 50, 100)


# ---------------------------------------------------------------------------
# Examples -> features


def features_of(part: task_splits.Examples, max_len: int, with_rating: bool) -> dict[str, np.ndarray]:
    """The model features of every row of `part` (see :mod:`tfrec.models.recommender`)."""
    time = inputs.time_features(part.timestamps)
    out = {inputs.ITEM_INDICES: part.query_ids(max_len), inputs.USER_INDEX: part.users.astype(np.int32),
           inputs.ITEM_INDEX: part.items.astype(np.int32), HOUR: time["hour"], WEEKDAY: time["weekday"]}
    if with_rating:
        out[RATING] = part.ratings.astype(np.float32)
    return out


def task_dataset(features: dict, batch_size: int, shuffle: bool, seed: int, repeat: bool,
                 sort_window: int = 0, poisson=None) -> tf.data.Dataset:
    """Feature batches with each batch trimmed to its longest history (exact: positions count from the right);
    with `poisson` (a private run), Poisson-sampled batches of ``(features, rating)``."""
    batches = inputs.feature_batches(features, batch_size, shuffle=shuffle, seed=seed, repeat=repeat, trim=True,
                                     sort_window=sort_window, poisson=poisson)
    if poisson is None:
        return batches
    return batches.map(lambda f: ({k: v for k, v in f.items() if k != RATING}, f[RATING]))



# ---------------------------------------------------------------------------
# Model construction


def rating_offsets(train: task_splits.Examples, num_users: int, num_items: int, mean: float,
                   shrinkage: float = 10.0) -> tuple[list, list]:
    """Item, then user, offsets from the training ratings: ``sum(r - mean) / (n + shrinkage)``.

    Returns ``(user offsets [num_users], item offsets [num_items])`` as lists."""
    residual = train.ratings.astype(np.float64) - mean
    item = np.bincount(train.items, residual, num_items) / (np.bincount(train.items, minlength=num_items) + shrinkage)
    residual = residual - item[train.items]
    user = np.bincount(train.users, residual, num_users) / (np.bincount(train.users, minlength=num_users) + shrinkage)
    return user.round(6).tolist(), item.round(6).tolist()


def model_arguments(task: str, config: RunConfig, dataset: PreparedDataset, split: task_splits.TaskSplit) -> dict:
    """The JSON-able constructor arguments of :class:`RecommenderModel` for this data and config."""
    t = config.tasks
    counts = np.bincount(split.train.items, minlength=split.vocabulary_size).astype(np.float64)
    args = {"task": task, "item_probability": (counts / max(counts.sum(), 1.0)).tolist(),
            "temperature": t.temperature, "objective": t.objective, "like_threshold": t.like_threshold,
            "cross_layers": t.cross_layers, "mlp": list(t.mlp), "dropout": t.ranking_dropout,
            "factor_l2": t.factor_l2, "freeze_backbone": t.freeze_backbone}
    if task == contract.MULTITASK:
        args.update(retrieval_weight=t.retrieval_weight, ranking_weight=t.ranking_weight)
    if task in (contract.RANKING, contract.MULTITASK):
        if split.train.ratings is None:
            raise TfrecError(f"the {task} task needs ratings, and the dataset at {dataset.path} has implicit "
                             "feedback only; use --task retrieval or next-item")
        args["rating_mean"] = float(split.train.ratings.mean())
        user_bias, args["item_bias"] = rating_offsets(split.train, len(dataset.user_vocab), split.vocabulary_size,
                                                      args["rating_mean"])
        if t.user_params:
            args["user_bias"] = user_bias
    if t.user_features and dataset.users is not None:
        table, size, _ = dataset.feature_table("user")
        numeric, _ = dataset.numeric_table("user")
        args.update(user_table=table.tolist(), user_table_size=int(size), user_numeric=numeric.tolist())
    if t.user_id or (task in (contract.RANKING, contract.MULTITASK) and t.user_params):
        args["num_users"] = len(dataset.user_vocab)  # per-user parameters (none with tasks.user_params: false)
    if dataset.items is not None:
        numeric, _ = dataset.numeric_table("item")
        args["item_numeric"] = numeric.tolist()
    if task == contract.COLD_START:
        table, size, columns = dataset.feature_table("item") if dataset.items is not None else (None, 0, [])
        content = {}
        if columns:
            content.update(feature_table=table.tolist(), feature_size=int(size))
        if dataset.items is not None and t.text_feature and \
                dataset.item_features.get(t.text_feature, {}).get("kind") == "text":
            text, text_size = dataset.text_table("item", t.text_feature)
            content.update(text_table=text.tolist(), text_size=int(text_size))
        if args.get("item_numeric") and np.asarray(args["item_numeric"]).shape[1]:
            content["numeric_table"] = args["item_numeric"]
        if not content:
            raise TfrecError(f"the cold-start task needs item content features, and the dataset at "
                             f"{dataset.path} has none")
        args["content"] = content
    return args


def monitored(task: str, config: RunConfig, n_candidates: int) -> tuple[str, str]:
    """(Keras log key, "max" or "min") of the validation figure that picks the best epoch."""
    if task == contract.MULTITASK:
        return "val_loss", "min"
    if task == contract.RANKING:
        return ("val_rmse", "min") if config.tasks.objective == "rating" else ("val_auc", "max")
    k = 100 if config.split != schema.LEAVE_ONE_OUT else 10
    k = max(x for x in RETRIEVAL_KS if x <= max(k if k <= n_candidates else n_candidates, 1))
    return f"val_factorized_top_k/top_{k}_categorical_accuracy", "max"


class BestEpoch(EpochSelection):
    """Selects on one figure of the Keras validation logs (`monitor`, ``max`` or ``min``)."""

    def __init__(self, monitor: str, mode: str, patience: int, state_path: str, on_improve, write_state: bool = True):
        super().__init__(state_path, on_improve, patience, mode, write_state=write_state, monitor=monitor)
        self.monitor = monitor

    def on_epoch_end(self, epoch, logs=None):
        if self.state["stopped_early"]:
            return
        logs = logs or {}
        value = logs.get(self.monitor)
        if value is None:
            raise TfrecError(f"validation did not report {self.monitor}; known: {', '.join(sorted(logs))}")
        self.state["last_epoch"] = epoch + 1
        self.record(epoch + 1, logs, float(value))
        print(f"epoch {epoch + 1}: {self.monitor} {float(value):.4f} ({self.describe()})", flush=True)


# ---------------------------------------------------------------------------
# Evaluation


def retrieval_metrics(model: RecommenderModel, part: task_splits.Examples, features: dict, candidates: np.ndarray,
                      exclude_history: bool, batch_size: int = 2048) -> tuple[dict, np.ndarray]:
    """Top-k accuracy (HR@k), NDCG and MRR of each row's item among `candidates`, full ranking."""
    matrix = model.candidate_matrix()
    allowed = np.zeros(len(matrix), bool)
    allowed[candidates] = True
    query = model.query_vectors({k: v for k, v in features.items() if k != RATING})
    ranks = np.zeros(len(part), np.int64)
    for start in range(0, len(part), batch_size):
        end = min(start + batch_size, len(part))
        scores = query[start:end] @ matrix.T
        scores[:, ~allowed] = -np.inf
        ranks[start:end] = ranking.target_ranks(scores, part.items[start:end],
                                                part.histories[start:end] if exclude_history else None)
    return rank_metrics(ranks), ranks


def rank_metrics(ranks: np.ndarray) -> dict:
    out = ranking.metrics_from_ranks(ranks)
    out.update({f"top_{k}_accuracy": float(np.mean(ranks < k)) for k in TOP_KS})
    out["rows"] = int(len(ranks))
    return out


def baselines(task: str, split: task_splits.TaskSplit, objective: str, threshold: float, seed: int) -> dict:
    """What a test result is compared with: popularity and random for retrieval and cold
    start, the training mean (or base rate) for ranking."""
    out = {}
    test = split.test
    if task in (contract.RETRIEVAL, contract.MULTITASK, contract.COLD_START):
        counts = np.bincount(split.train.items, minlength=split.vocabulary_size).astype(np.float64)
        if task == contract.COLD_START:
            # Cold items have no training rows: their popularity is counted on the test rows
            # of *other* users (an oracle that knows how each new item will do).
            counts = np.bincount(test.items, minlength=split.vocabulary_size).astype(np.float64)
        allowed = np.zeros(split.vocabulary_size, bool)
        allowed[split.candidates] = True
        ranks = np.zeros(len(test), np.int64)
        base = np.where(allowed, counts, -np.inf)
        exclude = split.scheme == schema.LEAVE_ONE_OUT
        for start in range(0, len(test), 2048):
            end = min(start + 2048, len(test))
            scores = np.tile(base, (end - start, 1))
            if task == contract.COLD_START:
                scores[np.arange(end - start), test.items[start:end]] -= 1.0  # leave the row's own user out
            ranks[start:end] = ranking.target_ranks(scores, test.items[start:end],
                                                    test.histories[start:end] if exclude else None)
        out["popularity"] = rank_metrics(ranks)
        rng = np.random.default_rng(seed)
        random_ranks = np.array([rng.integers(0, len(split.candidates)) for _ in range(len(test))])
        out["random"] = rank_metrics(random_ranks)
    if task in (contract.RANKING, contract.MULTITASK) and test.ratings is not None:
        train = split.train.ratings
        if objective == "binary":
            rate = float(np.mean(train >= threshold))
            out["base_rate"] = rating_metrics(np.full(len(test), math.log(rate / (1 - rate))), test.ratings,
                                              objective, threshold)
        else:
            out["train_mean"] = rating_metrics(np.full(len(test), float(train.mean()), np.float32), test.ratings,
                                               objective, threshold)
    return out


# ---------------------------------------------------------------------------
# The run


def finetune_task(data_dir: str, out: str, config: RunConfig | None = None, pretrained: str | None = None,
                  task: str = contract.RETRIEVAL, overwrite: bool = False, verbose=None, callbacks=(),
                  score_test: bool = True) -> dict:
    """Fine-tunes `task` from the backbone of `pretrained` (or from scratch) on ``config.split``; `callbacks`
    (Keras callbacks) run after the epoch selection, so they see its validation figure.  With
    `score_test` false (a tuner's trial) the test split is not read at the end."""
    if task not in TASKS:
        raise TfrecError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    config = config or RunConfig()
    scheme = config.split
    if config.refit:
        raise TfrecError("refit (training on the validation items) is for pretraining and next-item fine-tuning; "
                         f"the {task} task selects its epoch on held-back rows, so run it with refit: false")
    if task == contract.COLD_START and scheme != task_splits.COLD:
        raise TfrecError(f"the cold-start task trains and tests on the cold split; set split: cold "
                         f"(this config has {scheme!r})")
    if task != contract.COLD_START and scheme == task_splits.COLD:
        raise TfrecError("the cold split holds its test items out of training; use it with --task cold-start")
    strategy = trainer.make_strategy(config.strategy)  # first: a multi-worker strategy must precede any TensorFlow op
    dataset = PreparedDataset(data_dir)
    split = task_splits.load(dataset, scheme, seed=config.seed, valid_fraction=config.tasks.valid_fraction,
                             cold_fraction=config.tasks.cold_fraction)
    split = task_splits.label_part(split, config.finetune.fraction, config.seed)  # all rows unless fraction < 1
    pretrained_model = persistence.resolve_model_dir(pretrained) if pretrained else None
    source = None
    if pretrained_model:
        source, source_config = persistence.load(pretrained_model)
        source_split = source_config.get("run_config", {}).get("split", schema.LEAVE_ONE_OUT)
        if source_config.get("run_config", {}).get("refit"):
            raise TfrecError(f"the pretrained model at {pretrained_model} was refit on the validation items, which "
                             f"this {task} run would validate on; pretrain it with refit: false")
        if source_split != scheme:
            raise TfrecError(f"the pretrained model at {pretrained_model} was trained on the {source_split} split "
                             f"and this run tests on the {scheme} split, whose test rows it may have seen; "
                             f"pretrain with split: {scheme}")
        check_same_split(source_config.get("run_config", {}), config, pretrained_model)
    trainer.set_seed(config)
    stage = config.tasks
    max_len = config.model.max_len
    arguments = model_arguments(task, config, dataset, split)
    with_rating = task in (contract.RANKING, contract.MULTITASK)
    train_features = features_of(split.train, max_len, with_rating)
    valid_features = features_of(split.valid, max_len, with_rating)
    private = None
    if config.privacy.enabled and "finetune" in config.privacy.stages:
        if task != contract.RANKING:
            raise TfrecError(f"private training clips each example's gradient on its own; the {task} task's "
                             "in-batch softmax mixes a batch's examples (private TFRS training covers --task ranking)")
        train_features, sizes = privacy.by_user(train_features, inputs.USER_INDEX)  # unit example: their sum
        private = trainer.private_plan(config, "finetune", stage, sizes, strategy)
    train_ds = task_dataset(train_features, stage.batch_size, True, config.seed, repeat=True,
                            sort_window=stage.sort_window, poisson=private.sampling if private else None)
    valid_ds = task_dataset(valid_features, 1024, False, config.seed, repeat=False)
    steps = private.steps_per_epoch if private else runs.steps_per_epoch(stage, len(split.train))
    identity = {"stage": f"finetune:{task}", "config": config.to_dict(), "data": trainer.data_fingerprint(dataset),
                "pretrained": os.path.abspath(pretrained_model) if pretrained_model else None}
    with strategy.scope():
        backbone = trainer.build_backbone(config, dataset, adapters_of=config.finetune)
        model = RecommenderModel.built(backbone, **arguments)
        if source is not None:
            pooled.start_from(model, source, source_config, dataset, identity["data"], pretrained_model)
        model.apply_freeze()
        adapters.set_trainable(model, config.finetune.trainable)
        chief = cluster.is_chief(strategy)
        done = runs.prepare_run_dir(out, identity, overwrite, chief)
        if done:
            print(f"{out} holds a finished {task} run; pass --overwrite to run it again", flush=True)
            return done
        model.compile(optimizer=trainer.make_optimizer(stage, steps))
    extra = {"dataset": display(data_dir), "data_fingerprint": identity["data"], "run_config": config.to_dict(),
             "pretrained": identity["pretrained"], "parameters": count_parameters(model), "task_args": arguments}
    target = cluster.WriteTarget(out, strategy)  # the run folder on the chief, scratch on other workers
    model_dir = target.path(persistence.MODEL_DIR)

    def save_best(epoch, entry):
        persistence.save(model, model_dir, task, extra=dict(extra, epoch=epoch, valid_metrics=entry))

    monitor, mode = monitored(task, config, split.vocabulary_size - schema.NUM_ITEM_RESERVED)
    best = BestEpoch(monitor, mode, stage.patience, os.path.join(out, runs.VALIDATION_FILE), save_best,
                     write_state=target.chief)
    run_callbacks = [
        best,
        tf.keras.callbacks.TensorBoard(os.path.join(out, runs.LOG_DIR), update_freq="epoch", profile_batch=0),
        EpochCheckpoint(target.path(runs.CHECKPOINT_DIR), config.keep_checkpoints),
        Backup(os.path.join(out, runs.BACKUP_DIR), save_freq=max(1, config.backup_every_steps),
                         delete_checkpoint=False),
        *callbacks,
    ]
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    fitted = model
    if private:  # DP-SGD through the wrapper; validation, saving and the test on the model itself
        with strategy.scope():
            fitted = privacy.PrivateTraining(model, private.l2_clip, private.noise_multiplier, private.expected_batch,
                                             config.seed, config.privacy.sparse_gradients)
            fitted.compile(optimizer=model.optimizer)
    start = time.perf_counter()
    fitted.fit(train_ds, epochs=stage.epochs, steps_per_epoch=steps, validation_data=valid_ds,
               callbacks=run_callbacks, verbose=verbose)
    seconds = time.perf_counter() - start

    state = best.state
    summary = {"task": task, "split": scheme, "monitor": monitor, "best_epoch": state["best_epoch"],
               "epochs_run": state["last_epoch"], "stopped_early": state["stopped_early"],
               "valid": state["epochs"].get(str(state["best_epoch"]), {}),
               "fit_seconds_this_process": seconds, "parameters": extra["parameters"], "train_rows": len(split.train),
               **trainer.worker_fingerprint(model, config)}
    if private:
        summary["privacy"] = private.spent(fitted)
    if target.chief and score_test:  # the test split is scored once, by the worker that keeps the model
        best_model, _ = persistence.load(model_dir)
        summary["test"] = evaluate_task(best_model, split, config, task)
        test_reads.record(data_dir, model_dir, config.to_dict(), summary["test"], task)
        summary["baselines"] = baselines(task, split, stage.objective, stage.like_threshold, config.seed)
    write_json(target.path(runs.METRICS_FILE), summary)
    target.close()
    return runs.finish_run(out, summary, target.chief)


def check_same_split(source: dict, config: RunConfig, where: str) -> None:
    """Refuses a backbone pretrained on another draw of this run's random or cold split: the seed and the
    shares that pick the held-back validation rows (and, for cold, the held-out items) must be the same,
    or pretraining would have trained on this run's validation rows or cold test items."""
    if config.split == schema.LEAVE_ONE_OUT:
        return
    keys = ["seed", "tasks.valid_fraction"] + (["tasks.cold_fraction"] if config.split == "cold" else [])
    mine = config.to_dict()
    for key in keys:
        section, _, name = key.rpartition(".")
        theirs = (source.get(section, {}) if section else source).get(name)
        ours = (mine[section] if section else mine)[name]
        if theirs is not None and theirs != ours:
            raise TfrecError(f"the pretrained model at {where} drew the {config.split} split with {key} {theirs} "
                             f"and this run with {ours}, so it may have trained on this run's "
                             f"{'cold test items' if key == 'tasks.cold_fraction' else 'held-out rows'}; "
                             f"pretrain with the same {key}")


def evaluate_task(model: RecommenderModel, split: task_splits.TaskSplit, config: RunConfig, task: str) -> dict:
    """Test figures of a fine-tuned task model (retrieval ranks and/or rating errors)."""
    test = split.test
    with_rating = model.ranking_task is not None
    features = features_of(test, config.model.max_len, with_rating)
    out = {}
    if model.retrieval_task is not None:
        out[contract.RETRIEVAL], _ = retrieval_metrics(model, test, features, split.candidates,
                                                exclude_history=split.scheme == schema.LEAVE_ONE_OUT)
    if with_rating:
        predictions = model.ratings({k: v for k, v in features.items() if k != RATING})
        out[contract.RANKING] = rating_metrics(predictions, test.ratings, model.objective, model.like_threshold)
    return out


def summary_table(summary: dict) -> str:
    """A Markdown table of a task run's test figures beside its baselines."""
    rows = []
    test = summary.get("test", {})
    for name, figures in [("model", test.get(contract.RETRIEVAL))] + list(summary.get("baselines", {}).items()):
        if figures and "top_10_accuracy" in figures:
            rows.append(f"| retrieval {name} | {figures['top_10_accuracy']:.4f} | {figures['top_100_accuracy']:.4f} "
                        f"| {figures['ndcg@10']:.4f} |")
    lines = []
    if rows:
        lines += ["| test | HR@10 | top-100 accuracy | NDCG@10 |", "|---|---|---|---|"] + rows
    rating_rows = []
    for name, figures in [("model", test.get(contract.RANKING))] + list(summary.get("baselines", {}).items()):
        if figures and "rmse" in figures:
            rating_rows.append(f"| ranking {name} | {figures['rmse']:.4f} | {figures['mae']:.4f} | {figures['r2']:.4f} |")
        elif figures and "auc" in figures:
            rating_rows.append(f"| ranking {name} | AUC {figures['auc']:.4f} | log loss {figures['log_loss']:.4f} | "
                               f"accuracy {figures['accuracy']:.4f} |")
    if rating_rows:
        lines += (["", ""] if rows else []) + ["| test | RMSE | MAE | R² |", "|---|---|---|---|"] + rating_rows
    if summary.get("best_epoch") is not None:
        lines.append(f"\nbest epoch {summary['best_epoch']} of {summary.get('epochs_run')} by {summary.get('monitor')}")
    return "\n".join(lines) + "\n"
