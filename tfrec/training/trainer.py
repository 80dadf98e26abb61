"""Pretraining and next-item fine-tuning runs: ``model.fit`` with validation, checkpoints, resume.

A run folder holds::

    run.json          what was run (stage, settings, data fingerprint) and whether it finished
    model/            the best model so far by validation NDCG@10 (config.json + ckpt/)
    backup/           the training state, backed up every few steps and at every epoch end;
                      a killed run started again with the same command resumes from it
    checkpoints/      one checkpoint per epoch (the last few kept)
    logs/             TensorBoard logs
    validation.json   per-epoch validation metrics, best epoch, early-stopping state
    metrics.json      validation metrics of the best epoch (written at the end)
"""

from __future__ import annotations

import hashlib
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfrec import contract  # noqa: E402
from tfrec.data import inputs, schema  # noqa: E402
from tfrec.data.dataset import PreparedDataset  # noqa: E402
from tfrec.data.store import display  # noqa: E402
from tfrec.errors import TfrecError  # noqa: E402
from tfrec.models import adapters, persistence  # noqa: E402
from tfrec.models.sequence_backbone import SequenceBackbone  # noqa: E402
from tfrec.models.tasks import (  # noqa: E402
    MaskedItemPretrainer, NextItemRecommender, count_parameters)
from tfrec.evaluation.ranking import model_scorer  # noqa: E402,F401  (named here for the callers of old)
from tfrec.fileio import write_json  # noqa: E402
from tfrec.models.persistence import MODEL_DIR, resolve_model_dir  # noqa: E402,F401
from tfrec.training import cluster, pooled, privacy  # noqa: E402
from tfrec.training.callbacks import Backup, EpochCheckpoint, RankingValidation  # noqa: E402
from tfrec.training.runs import (BACKUP_DIR, CHECKPOINT_DIR, LOG_DIR, METRICS_FILE,  # noqa: E402,F401
                                 VALIDATION_FILE, finish_run, prepare_run_dir, record_preprocessor,
                                 steps_per_epoch)
from tfrec.training.config import STRATEGIES, RunConfig  # noqa: E402
from tfrec.training.sequence_data import SequenceData, data_fingerprint  # noqa: E402,F401

def set_seed(config: RunConfig) -> None:
    tf.keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The named ``tf.distribute`` strategy; ``mirrored`` spans every local GPU, or the CPU;
    ``multi-worker`` spans the cluster of ``TF_CONFIG`` (:mod:`tfrec.training.cluster`)."""
    if name == "multi-worker":  # first: collectives must be configured before TensorFlow starts
        return cluster.multi_worker_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.MirroredStrategy(devices=[d.name for d in gpus] or ["/cpu:0"])
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one-device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0")
    raise TfrecError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}")


def build_backbone(config: RunConfig, dataset: PreparedDataset, output_features: bool = False,
                   causal: bool = False, output_extra_dim: int = 0,
                   output_last_item: bool = False, adapters_of=None) -> SequenceBackbone:
    """The backbone of `config` over `dataset`'s item vocabulary (and item features, when used);
    `output_features`: its heads score items with their feature embedding too; `causal`:
    each position attends to the ones before it only; `output_extra_dim`: its item heads
    score with output-only item vectors of that width too; `output_last_item`: next-item heads
    add a vector of the history's last item to their state; `adapters_of`: the fine-tuning stage
    whose ``trainable: adapters`` builds the encoder with its low-rank adapters."""
    from tfrec.models import backbone_registry

    m = config.model
    table, size = None, 0
    if m.item_features:
        t, size, columns = dataset.item_feature_table()
        if columns:
            table = t
    extra = {}
    if adapters_of is not None and adapters_of.trainable == "adapters":
        if m.backbone not in adapters.ADAPTED:
            raise TfrecError(f"finetune.trainable adapters puts low-rank adapters on Transformer layers, and "
                             f"model.backbone {m.backbone} has none; use head (frozen backbone) or all")
        extra = dict(adapter_rank=adapters_of.adapter_rank, adapter_alpha=adapters_of.adapter_alpha)
    try:
        return backbone_registry.build_backbone(
            m.backbone, vocabulary_size=len(dataset.item_vocab), max_len=m.max_len, hidden_dim=m.hidden_dim,
            num_layers=m.num_layers, num_heads=m.num_heads, intermediate_dim=m.intermediate_dim, dropout=m.dropout,
            feature_table=table, feature_vocabulary_size=size, output_features=output_features, causal=causal,
            output_extra_dim=output_extra_dim, output_last_item=output_last_item, **extra)
    except ValueError as e:
        raise TfrecError(f"model.backbone {m.backbone}: {e}") from None


def private_plan(config: RunConfig, name: str, stage, unit_sizes, strategy) -> privacy.Plan | None:
    """The DP-SGD plan of a stage when ``privacy`` covers it; private training runs on one replica."""
    plan = privacy.plan(config.privacy, stage, name, unit_sizes)
    if plan and strategy.num_replicas_in_sync > 1:
        raise TfrecError(f"private training clips and noises each step's gradient on one replica; this strategy has "
                         f"{strategy.num_replicas_in_sync} (use strategy: default)")
    if plan:
        print(f"privacy: {name} samples {plan.units:,} {plan.unit}s at rate {plan.sampling.rate:.4g}, "
              f"{plan.steps_per_epoch} steps per epoch, noise multiplier {plan.noise_multiplier:.4g}", flush=True)
    return plan


def make_optimizer(stage, steps_per_epoch: int) -> tf.keras.optimizers.Optimizer:
    """Adam (AdamW with weight decay), at a constant or cosine-decayed learning rate."""
    if stage.lr_schedule == "constant":
        rate = stage.learning_rate
    elif stage.lr_schedule == "cosine":
        rate = tf.keras.optimizers.schedules.CosineDecay(
            stage.learning_rate, decay_steps=max(1, stage.epochs * steps_per_epoch), alpha=0.1)
    else:
        raise TfrecError(f"unknown lr_schedule {stage.lr_schedule!r}; use constant or cosine")
    if stage.weight_decay:
        return tf.keras.optimizers.AdamW(rate, weight_decay=stage.weight_decay)
    return tf.keras.optimizers.Adam(rate)


# ---------------------------------------------------------------------------
# Runs


def _fit(model, train_ds, steps: int, stage, config: RunConfig, data: SequenceData, out: str, task: str,
         extra: dict, verbose, more_callbacks=(), private: privacy.Plan | None = None) -> dict:
    """Fits `model` with validation, checkpoints and backups; with `private`, through DP-SGD
    (:class:`tfrec.training.privacy.PrivateTraining`), the privacy spent going into the summary."""
    max_len = config.model.max_len
    strategy = model.distribute_strategy
    fitted = model
    if private:
        with strategy.scope():
            fitted = privacy.PrivateTraining(model, private.l2_clip, private.noise_multiplier,
                                             private.expected_batch, config.seed, config.privacy.sparse_gradients)
            fitted.compile(optimizer=model.optimizer)
    target = cluster.WriteTarget(out, strategy)  # the run folder on the chief, scratch on other workers

    def save_best(epoch, metrics):
        persistence.save(model, target.path(MODEL_DIR), task, extra=dict(extra, epoch=epoch, valid_metrics=metrics))

    validation = RankingValidation(
        model_scorer(model, max_len, config.eval_batch_size), data.valid, os.path.join(out, VALIDATION_FILE),
        save_best, every=stage.validate_every, patience=stage.patience, exclude_history=config.exclude_history,
        batch_size=config.eval_batch_size, select=not config.refit, write_state=target.chief,
        all_sum=data.share.all_sum if data.share else None)  # a worker's own users: figures pooled over all
    callbacks = [
        validation,  # first: later callbacks see the validation metrics in the logs
        tf.keras.callbacks.TensorBoard(os.path.join(out, LOG_DIR), update_freq="epoch", profile_batch=0),
        EpochCheckpoint(target.path(CHECKPOINT_DIR), config.keep_checkpoints),
        Backup(os.path.join(out, BACKUP_DIR), save_freq=max(1, config.backup_every_steps), delete_checkpoint=False),
        *more_callbacks,  # after validation, so they read its figures (a tuner's pruning callback)
    ]
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    if data.share:  # this worker's own pipeline, batched per replica, not split again
        train_ds = data.share.dataset(train_ds)
    start = time.perf_counter()
    fitted.fit(train_ds, epochs=stage.epochs, steps_per_epoch=steps, callbacks=callbacks, verbose=verbose)
    seconds = time.perf_counter() - start
    state = validation.state
    best = state["epochs"].get(str(state["best_epoch"]), {})
    metrics = {k[4:]: v for k, v in best.items() if k.startswith("val_")}
    if metrics and state.get("users"):
        metrics["users"] = state["users"]
    summary = {"best_epoch": state["best_epoch"], "epochs_run": state.get("last_epoch", 0),
               "validations": len(state["epochs"]), "stopped_early": state["stopped_early"],
               "valid": metrics, "fit_seconds_this_process": seconds, "refit": config.refit,
               **worker_fingerprint(model, config)}
    if private:
        summary["privacy"] = private.spent(fitted)
    write_json(target.path(METRICS_FILE), summary)
    target.close()
    return summary


def worker_fingerprint(model: tf.keras.Model, config: RunConfig) -> dict:
    """``weights_sha256`` and ``worker`` for a run's summary; printed by each worker of a multi-worker job."""
    out = {"weights_sha256": weights_fingerprint(model), "worker": cluster.worker_name(model.distribute_strategy)}
    if config.strategy == "multi-worker":
        print(f"worker {out['worker']}: weights sha256 {out['weights_sha256']}", flush=True)
    return out


def weights_fingerprint(model: tf.keras.Model) -> str:
    """SHA-256 of every weight's bytes: equal on every worker of a multi-worker job."""
    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def pretrain(data_dir: str | list[str], out: str, config: RunConfig | None = None, overwrite: bool = False,
             verbose=None, preprocessor: str | None = None, link: str = "title") -> dict:
    """Pretraining of a backbone on the training sequences of `data_dir`.

    ``pretrain.objective: cloze`` (masked items from both sides, with segment continuation and
    attribute prediction as set) saves a pretrainer; ``autoregressive`` (every position predicts the
    item after it, through a causal view of the backbone: SASRec's and GRU4Rec's objective) saves a
    next-item model.  ``finetune --pretrained`` takes either.  `preprocessor`: the transform step's artifact,
    checked against this dataset and model length and recorded in the run folder, as
    :func:`tfrec.training.finetuning.finetune` does.  Several `data_dir` folders pool their sequences into
    one item space (:mod:`tfrec.training.pooled`; `link`: how items are matched across them), validated on
    the first."""
    config = config or RunConfig()
    strategy = make_strategy(config.strategy)  # first: a multi-worker strategy must precede any TensorFlow op
    paths = [data_dir] if isinstance(data_dir, str) else list(data_dir)
    data_dir = paths[0]
    corpus = None
    if not config.pretrain.with_target and len(paths) < 2:
        raise TfrecError("pretrain.with_target: false pretrains on the other datasets alone; pass them after the "
                         "target: --data TARGET --data OTHER")
    if len(paths) > 1:
        if preprocessor:
            raise TfrecError("--preprocessor describes one dataset; a pretraining on several takes none")
        data, corpus, fingerprint = pooled.load(paths, config, link)
    spec = record_preprocessor(preprocessor, data_dir, config.model.max_len) if preprocessor else None
    if corpus is None:  # on several workers, each reads only its own sequence shards
        data = SequenceData.load(data_dir, config.split, config, share=cluster.worker_share(strategy))
        fingerprint = data_fingerprint(data.dataset)
    set_seed(config)
    stage = config.pretrain
    max_len = config.model.max_len
    batch = data.batch_size(stage.batch_size)
    private = None
    if stage.objective == "autoregressive":
        x, y = inputs.causal_next_item_examples(data.train, max_len)
        private = private_plan(config, "pretrain", stage, privacy.unit_sizes_of_causal_rows(data.train, max_len),
                                strategy)
        train_ds = inputs.causal_next_item_dataset(x, y, batch_size=batch, repeat=True, seed=config.seed,
                                                   trim=True, sort_window=stage.sort_window,
                                                   poisson=private.sampling if private else None)
        examples, saved_as = len(y), contract.NEXT_ITEM

        def build():
            return NextItemRecommender(build_backbone(config, data.dataset, causal=True),
                                       num_sampled=stage.num_sampled, item_counts=data.item_counts)
    else:
        attribute_table, attribute_size = None, 0
        if config.experimental.attribute_weight:
            attribute_table, attribute_size, columns = data.dataset.item_feature_table()
            if not columns:
                raise TfrecError(f"the attribute objective needs item features, and the dataset at {data_dir} "
                                 "has none")
        sequences = inputs.sliding_windows(data.train, max_len)
        private = private_plan(config, "pretrain", stage, privacy.unit_sizes_of_windows(data.train, max_len),
                                strategy)
        if private:
            privacy.refuse_coupled_objectives("pretrain", **{
                "pretrain.continuation_weight": stage.continuation_weight,
                "experimental.attribute_weight": config.experimental.attribute_weight})
        train_ds = inputs.masked_item_dataset(
            sequences, max_len, data.vocabulary_size, batch_size=batch, mask_rate=stage.mask_rate,
            mask_last_rate=stage.mask_last_rate, max_masks=stage.max_masks or None,
            augmentations=config.experimental.pretrain_augmentations, repeat=True, seed=config.seed,
            continuation_rate=stage.continuation_rate if stage.continuation_weight else 0.0, trim=True,
            sort_window=stage.sort_window, poisson=private.sampling if private else None)
        examples, saved_as = len(sequences), contract.PRETRAIN

        def build():
            return MaskedItemPretrainer(
                build_backbone(config, data.dataset), num_sampled=stage.num_sampled, item_counts=data.item_counts,
                attribute_table=attribute_table, attribute_size=attribute_size,
                attribute_weight=config.experimental.attribute_weight, continuation_weight=stage.continuation_weight)
    steps = private.steps_per_epoch if private else steps_per_epoch(stage, data.total(examples))
    identity = {"stage": contract.PRETRAIN, "config": config.to_dict(), "data": fingerprint}
    chief = cluster.is_chief(strategy)
    done = prepare_run_dir(out, identity, overwrite, chief)
    if done:
        print(f"{out} holds a finished pretraining run; pass --overwrite to run it again", flush=True)
        return done
    with strategy.scope():
        model = build()
        model.compile(optimizer=make_optimizer(stage, steps))
    extra = {"dataset": display(data_dir), "data_fingerprint": identity["data"], "run_config": config.to_dict(),
             "parameters": count_parameters(model), "pretrain_objective": stage.objective}
    if corpus is not None:
        extra.update(datasets=[os.path.abspath(p) for p in paths], corpus=pooled.record(corpus, data))
        print(f"pretraining on {len(paths)} datasets: {len(corpus.keys) - len(corpus.item_maps[0])} items beside "
              f"the first's {len(corpus.item_maps[0])}, {corpus.linked_items} linked across them", flush=True)
    summary = _fit(model, train_ds, steps, stage, config, data, out, saved_as, extra, verbose, private=private)
    record = finish_run(out, summary, chief)
    if spec and chief:
        record_preprocessor(preprocessor, data_dir, config.model.max_len, out, spec)
    return record


def next_item_model(config: RunConfig, data: SequenceData, pretrained_model: str | None, fingerprint: str,
                    teacher: bool = False) -> NextItemRecommender:
    """The next-item model ``config.finetune`` describes, starting from the backbone and head of
    `pretrained_model` (a resolved model folder) or from fresh weights; built in the caller's strategy scope."""
    stage = config.finetune
    backbone = build_backbone(config, data.dataset, output_features=stage.output_features,
                              causal=stage.examples == "causal", output_extra_dim=stage.output_extra_dim,
                              output_last_item=stage.output_last_item, adapters_of=stage)
    model = NextItemRecommender(backbone, num_sampled=stage.num_sampled, item_counts=data.item_counts,
                                contrastive_weight=stage.contrastive_weight,
                                contrastive_temperature=stage.contrastive_temperature,
                                distill_weight=stage.distill_weight if teacher else 0.0,
                                distill_temperature=stage.distill_temperature,
                                triplet_weight=config.experimental.triplet_weight,
                                triplet_loss=config.experimental.triplet_loss,
                                triplet_margin=config.experimental.triplet_margin,
                                triplet_negatives=config.experimental.triplet_negatives)
    if pretrained_model:
        source, source_config = persistence.load(pretrained_model)
        if source_config.get("run_config", {}).get("refit") and not config.refit:
            raise TfrecError(f"the pretrained model at {pretrained_model} was refit on the validation items, "
                             "so validating this run on them would not be held out; fine-tune it with refit too, "
                             "or pretrain without refit")
        pooled.start_from(model, source, source_config, data.dataset, fingerprint, pretrained_model)
    adapters.set_trainable(model, stage.trainable)
    return model


def finetune(data_dir: str, out: str, config: RunConfig | None = None, pretrained: str | None = None,
             task: str = contract.NEXT_ITEM, overwrite: bool = False, verbose=None, callbacks=()) -> dict:
    """Next-item fine-tuning, from the backbone (and head) of `pretrained` or from scratch; `callbacks`
    (Keras callbacks) run after the validation callback, so they see ``val_ndcg@10``."""
    if task != contract.NEXT_ITEM:
        raise TfrecError(f"unknown fine-tuning task {task!r}; this version fine-tunes: next-item")
    config = config or RunConfig()
    if config.split != schema.LEAVE_ONE_OUT:
        raise TfrecError(f"next-item fine-tuning uses the leave-one-out split; this config has split {config.split!r}")
    strategy = make_strategy(config.strategy)  # first: a multi-worker strategy must precede any TensorFlow op
    # on several workers, each reads only its own sequence shards
    data = SequenceData.load(data_dir, config=config, share=cluster.worker_share(strategy))
    pretrained_model = resolve_model_dir(pretrained) if pretrained else None
    set_seed(config)
    stage = config.finetune
    max_len = config.model.max_len
    batch = data.batch_size(stage.batch_size)
    fingerprint = data_fingerprint(data.dataset)
    teacher = None
    if stage.teacher:  # checked now, so a wrong teacher is refused before the run folder is made
        from tfrec.training import distill

        teacher = distill.check_teacher(stage.teacher, data.vocabulary_size, fingerprint, config.refit)
    train_ds = None
    labelled = data.label_part(stage.fraction, config.seed)  # every sequence unless finetune.fraction < 1
    # how many training examples each user gives (privacy.unit: user samples users, one example each)
    unit_sizes = {"all-prefixes": lambda: privacy.unit_sizes_of_prefixes(labelled),
                  "causal": lambda: privacy.unit_sizes_of_causal_rows(labelled, max_len),
                  "random-prefix": lambda: privacy.unit_sizes_of_windows(labelled, max_len)}
    private = (private_plan(config, "finetune", stage, unit_sizes[stage.examples](), strategy)
               if stage.examples in unit_sizes else None)
    if private:
        privacy.refuse_coupled_objectives("finetune", **{
            "finetune.contrastive_weight": stage.contrastive_weight, "finetune.teacher": bool(stage.teacher),
            "experimental.triplet_weight": config.experimental.triplet_weight})
    poisson = private.sampling if private else None
    if stage.examples == "all-prefixes":
        x, y = inputs.next_item_examples(labelled, max_len)
        last_weight = config.experimental.last_weight
        weights = inputs.last_example_weights(labelled, last_weight) if last_weight != 1 else None

        def prefix_dataset(soft_targets=None):
            return inputs.next_item_dataset(x, y, batch_size=batch, repeat=True, seed=config.seed,
                                            trim=True, sort_window=stage.sort_window, weights=weights,
                                            soft_targets=soft_targets, poisson=poisson)

        if not teacher:  # with a teacher, built once its targets are in (below)
            train_ds = prefix_dataset()
        n = len(y)
    elif stage.examples == "causal":
        x, y = inputs.causal_next_item_examples(labelled, max_len)
        train_ds = inputs.causal_next_item_dataset(x, y, batch_size=batch, repeat=True, seed=config.seed,
                                                   trim=True, sort_window=stage.sort_window, poisson=poisson)
        n = len(y)
    elif stage.examples == "random-prefix":
        sequences = inputs.sliding_windows(labelled, max_len)
        train_ds = inputs.next_item_sequence_dataset(
            sequences, max_len, batch_size=batch, prefix_rate=stage.prefix_rate,
            augmentations=config.experimental.finetune_augmentations, repeat=True, seed=config.seed, trim=True,
            sort_window=stage.sort_window, poisson=poisson)
        n = len(sequences)
    else:
        raise TfrecError(f"unknown finetune.examples {stage.examples!r}; use all-prefixes, random-prefix or causal")
    steps = private.steps_per_epoch if private else steps_per_epoch(stage, data.total(n))
    identity = {"stage": f"finetune:{task}", "config": config.to_dict(), "data": fingerprint,
                "pretrained": os.path.abspath(pretrained_model) if pretrained_model else None}
    if teacher:
        identity["teacher"] = os.path.abspath(teacher)
    from tfrec.models import backbone_registry

    try:
        causal_backbone = backbone_registry.is_causal(config.model.backbone)
    except ValueError as e:
        raise TfrecError(str(e)) from None
    if causal_backbone and stage.examples != "causal":
        raise TfrecError(f"model.backbone {config.model.backbone} reads histories left to right, so every position "
                         "learns the item after it: fine-tune it with finetune.examples: causal")
    with strategy.scope():
        model = next_item_model(config, data, pretrained_model, fingerprint, teacher=bool(teacher))
        chief = cluster.is_chief(strategy)
        done = prepare_run_dir(out, identity, overwrite, chief)
        if done:
            print(f"{out} holds a finished fine-tuning run; pass --overwrite to run it again", flush=True)
            return done
        model.compile(optimizer=make_optimizer(stage, steps))
    if teacher:
        soft = distill.cached_teacher_targets(
            out if chief else None, teacher, x, data.vocabulary_size,
            identity["data"], config.refit, stage.distill_top_k, stage.distill_temperature, config.eval_batch_size)
        train_ds = prefix_dataset(soft)
    extra = {"dataset": display(data_dir), "data_fingerprint": identity["data"], "run_config": config.to_dict(),
             "pretrained": identity["pretrained"], "teacher": identity.get("teacher"),
             "parameters": count_parameters(model), "finetune_users": data.total(len(labelled))}
    summary = _fit(model, train_ds, steps, stage, config, data, out, task, extra, verbose, callbacks, private)
    return finish_run(out, summary, chief)


