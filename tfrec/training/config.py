"""Run configuration: model shape, pretraining and fine-tuning settings, strategy, seed.

A config file (YAML or JSON) has the sections ``model``, ``pretrain``, ``finetune`` and ``tasks``
plus the top-level keys of :class:`RunConfig`; anything it leaves out keeps its
default.  Unknown keys are an error, so a typo never passes silently.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from tfrec.contract import TRAINABLE
from tfrec.errors import TfrecError

STRATEGIES = ("mirrored", "default", "one-device", "multi-worker")
EXAMPLES = ("all-prefixes", "random-prefix", "causal")
PRETRAIN_OBJECTIVES = ("cloze", "autoregressive")
LR_SCHEDULES = ("constant", "cosine")
SPLITS = ("loo", "random", "cold")
OBJECTIVES = ("rating", "binary")


@dataclasses.dataclass
class ModelConfig:
    """The backbone and its shape (:mod:`tfrec.models.backbone_registry`)."""

    # transformer (bidirectional, BERT4Rec-style), causal-transformer (SASRec-style), gru, lstm, or a
    # registered name; gru, lstm and causal-transformer read histories left to right only, so their
    # next-item fine-tuning takes finetune.examples: causal.
    backbone: str = "transformer"
    max_len: int = 50
    hidden_dim: int = 64
    num_layers: int = 2
    num_heads: int = 2
    intermediate_dim: int = 256
    dropout: float = 0.3
    # Add the pooled embedding of the items' categorical/list features (genres,
    # categories, attributes) to the item embedding, where the dataset has any.
    item_features: bool = True


@dataclasses.dataclass
class StageConfig:
    """Settings shared by pretraining and fine-tuning."""

    epochs: int = 100
    batch_size: int = 256
    learning_rate: float = 1e-3
    # "constant", or "cosine": decay to a tenth of learning_rate over epochs x steps.
    lr_schedule: str = "constant"
    weight_decay: float = 0.0
    # Steps per epoch; 0 = one pass over the training sequences.
    steps_per_epoch: int = 0
    # Early stopping: validations without a better validation NDCG@10 before stopping (0 = never).
    patience: int = 10
    # Validate every this many epochs.
    validate_every: int = 1
    # Negatives of a sampled softmax with log-q correction; 0 = full softmax over the catalogue.
    num_sampled: int = 0
    # Batch rows of similar length (sorted within windows of this many batches, 0/1 = off);
    # each batch is trimmed to its longest row, so short histories cost less.
    sort_window: int = 16


@dataclasses.dataclass
class PretrainConfig(StageConfig):
    epochs: int = 30
    learning_rate: float = 2e-3
    validate_every: int = 5
    # cloze: masked items predicted from both sides (bidirectional backbones); autoregressive: every
    # position predicts the item after it (the natural objective of causal and recurrent backbones;
    # the mask, continuation and attribute settings are not read then).
    objective: str = "cloze"
    mask_rate: float = 0.4
    max_masks: int = 0  # 0 = ceil(mask_rate * max_len)
    # Share of sequences in which only the last item is masked (the next-item situation).
    mask_last_rate: float = 0.1
    # Weight of the segment-continuation loss (0 = off) and the share of negative rows.
    continuation_weight: float = 0.5
    continuation_rate: float = 0.5
    # On several datasets (pretrain --data TARGET --data OTHER ...): false leaves the target's own sequences
    # out, so the encoder and the items the others link are learnt from the other datasets alone (a public
    # corpus, say) and a fine-tuning on the target, private or not, reads data the pretraining never saw;
    # the target still lends its item vocabulary and its validation split.
    with_target: bool = True


@dataclasses.dataclass
class FinetuneConfig(StageConfig):
    epochs: int = 20
    learning_rate: float = 1e-3
    patience: int = 3
    # "all-prefixes" (one example per position of every history), "random-prefix" (one row
    # per user per epoch, cheaper epochs) or "causal" (a causal backbone: each position attends
    # to the ones before it only, so one pass over a history trains every position's next item,
    # an epoch costs about as much as a pretraining epoch, and scores are read at the last item).
    examples: str = "all-prefixes"
    # Label-scarce fine-tuning: the share of the labels fine-tuning learns from, drawn with the seed, by
    # user for next-item (the examples of that share of users; validation and test keep every user) and
    # by training row for the TFRS tasks.  Pretraining still reads every training sequence.
    fraction: float = 1.0
    # What fine-tuning trains (next-item and the TFRS tasks): "all" weights, the "head" alone on a frozen
    # backbone, or low-rank "adapters" (LoRA, rank adapter_rank, scale adapter_alpha / rank) on each
    # Transformer layer's query, value and feed-forward kernels plus the head; merged into the kernels
    # when the model is saved, so exports are plain models (tfrec/models/adapters.py).
    trainable: str = "all"
    adapter_rank: int = 8
    adapter_alpha: float = 16.0
    # random-prefix: share of rows whose target is drawn from an earlier point of the sequence.
    prefix_rate: float = 0.5
    # Weight of a contrastive regulariser (0 = off): two dropout passes over each example should
    # give matching states, told apart from the batch's other examples (InfoNCE at this temperature).
    contrastive_weight: float = 0.0
    contrastive_temperature: float = 1.0
    # With model.item_features: score items against their item + feature embedding (the input's
    # item representation) rather than the item embedding alone, so rarely seen items borrow
    # from their features.  A head setting: no new weights, any pretrained backbone takes it.
    output_features: bool = False
    # Output-only item vectors of this width beside the tied item embedding (0 = none): the head
    # scores a state of hidden_dim + output_extra_dim dimensions, so the model can express item
    # distributions of higher rank than its input width (a distilled ensemble's, say).  New head
    # weights (vocabulary x width), started so the first step scores as the pretrained head does.
    output_extra_dim: int = 0
    # Next-item: add a vector of the history's last item to the head's state (a learnt transition
    # from that item to each next one, beside what the encoder reads from the whole history).
    # New head weights (vocabulary x state width), started at zero like output_extra_dim's.
    output_last_item: bool = False
    # Knowledge distillation (all-prefixes only): a trained next-item model or ensemble (run or
    # model/ folder, trained on the same data) whose item distribution on each training example
    # the model learns beside the observed next item.  The teacher's distribution is cut to its
    # distill_top_k most likely items (renormalised), both sides are softened by
    # distill_temperature, and the loss adds distill_weight x temperature^2 x their cross-entropy.
    teacher: str = ""
    distill_weight: float = 1.0
    distill_temperature: float = 1.0
    distill_top_k: int = 100


@dataclasses.dataclass
class TaskConfig(StageConfig):
    """Fine-tuning into the TFRS tasks (retrieval, ranking, cold-start, multitask)."""

    # Settings of StageConfig the TFRS trainer does not read (it validates every epoch, with its
    # in-batch softmax): refused when set, left out of configs/default.yaml.
    UNREAD = ("num_sampled", "validate_every")

    epochs: int = 30
    batch_size: int = 512
    learning_rate: float = 1e-3
    patience: int = 3
    # In-batch softmax temperature (logits are divided by it).
    temperature: float = 1.0
    # Loss weights of the multitask model (retrieval and ranking tasks use 1 and 0 or 0 and 1).
    retrieval_weight: float = 1.0
    ranking_weight: float = 1.0
    # Ranking objective: "rating" (regression, MSE) or "binary" (rating >= like_threshold, cross-entropy).
    objective: str = "rating"
    like_threshold: float = 4.0
    # Query tower inputs beyond the history: the user's features, and a user-id embedding.
    user_features: bool = True
    user_id: bool = False
    # Ranking and multitask models: learn parameters of each user (an id embedding in the query tower and
    # the ranking network, a rating offset, a matrix-factorisation factor). false keeps none: the model and
    # its export hold no per-user data, and a request names its user by features (docs/privacy.md).
    user_params: bool = True
    # Content of the cold-start candidate tower: a text feature tokenised into words ("" = none).
    text_feature: str = "title"
    # Deep-and-cross ranking network.
    cross_layers: int = 1
    mlp: list = dataclasses.field(default_factory=lambda: [256, 64])
    ranking_dropout: float = 0.2
    # L2 weight of the ranking model's matrix-factorisation factors.
    factor_l2: float = 1e-4
    # Keep the backbone fixed: the pretrained encoder as a feature extractor (faster epochs).
    freeze_backbone: bool = False
    # Share of the training rows held back for validation (random and cold schemes).
    valid_fraction: float = 0.05
    # Share of the items held out of training by the cold scheme.
    cold_fraction: float = 0.1


@dataclasses.dataclass
class ExperimentalConfig:
    """Settings whose ablation found no gain, or that no ablation has measured yet: off by default, used
    by no shipped config, kept so that the experiments docs/BENCHMARKS.md reports can be run again."""

    # Pretraining: weight of predicting each masked item's attributes (0 = off).  The ablation of
    # docs/BENCHMARKS.md: within noise alone, and a fifth of the gain lost beside segment continuation.
    attribute_weight: float = 0.0
    # Next-item, all-prefixes: loss weight of each user's most recent training example, the others
    # weighing 1.  On Beauty's validation split weight 3 scored below weight 1 (docs/BENCHMARKS.md).
    last_weight: float = 1.0
    # Augmentation ratios (crop, mask, reorder) of the pretraining and of the next-item training
    # sequences (cloze and random-prefix examples).  Not measured against no augmentation yet.
    pretrain_augmentations: dict = dataclasses.field(default_factory=dict)
    finetune_augmentations: dict = dataclasses.field(default_factory=dict)
    # Next-item: weight of a triplet objective beside the item loss (0 = off): each history's state
    # should score its next item above triplet_negatives items drawn uniformly, by triplet_margin
    # ("margin") or as the cross-entropy of the positive among them ("infonce").  Not measured yet.
    triplet_weight: float = 0.0
    triplet_loss: str = "margin"
    triplet_margin: float = 1.0
    triplet_negatives: int = 8


@dataclasses.dataclass
class PrivacyConfig:
    """Differentially private training (DP-SGD, :mod:`tfrec.training.privacy`; docs/privacy.md): off while
    both noise_multiplier and target_epsilon are 0."""

    # Standard deviation of the Gaussian noise added to each step's summed gradient, in units of l2_clip.
    noise_multiplier: float = 0.0
    # > 0: pick the smallest noise multiplier whose planned steps (epochs x steps per epoch) spend at most
    # this epsilon (noise_multiplier is then ignored).
    target_epsilon: float = 0.0
    # Each example's gradient is clipped to this L2 norm.
    l2_clip: float = 1.0
    # The privacy unit: "user" (a user joins a step with probability batch_size / users and contributes one
    # of their examples: the guarantee protects a person's whole history) or "example".
    unit: str = "user"
    # delta of the reported (epsilon, delta); 0 = 1 / number of units.
    delta: float = 0.0
    # The stages trained privately: "pretrain" (masked-item or autoregressive) and "finetune" (next-item).
    stages: list = dataclasses.field(default_factory=lambda: ["pretrain", "finetune"])
    # Keep each example's gradient of an embedding table as the rows it read, where it reads fewer than the
    # table holds (clipped and summed from those rows, the noise still on the whole table): the same result
    # as dense per-example gradients, without a copy of the table per example. false: every per-example
    # gradient dense (the reference).
    sparse_gradients: bool = True

    @property
    def enabled(self) -> bool:
        return self.noise_multiplier > 0 or self.target_epsilon > 0


@dataclasses.dataclass
class FederatedConfig:
    """Federated next-item fine-tuning on Flower (``tfrec finetune --federated``, :mod:`tfrec.training.federated`;
    docs/privacy.md): the training users split across simulated clients that train locally and send weights."""

    # Simulated clients; the training users are dealt to them at random (seeded), each client's users only
    # ever seen by that client.
    clients: int = 10
    # Rounds of FedAvg: the server sends the global weights, sampled clients train and send theirs back,
    # the server averages them weighted by examples.
    rounds: int = 10
    # Passes over its own examples a client makes each round.
    local_epochs: int = 1
    # Share of the clients sampled each round.
    fraction: float = 1.0
    # > 0: client-level differential privacy on the server (each client's update clipped to clip_norm,
    # Gaussian noise of noise_multiplier x clip_norm added to the sum), with epsilon reported.
    noise_multiplier: float = 0.0
    clip_norm: float = 0.0


# Settings that moved under experimental: (old dotted key -> new), read from the records of runs
# made before the move (RunConfig.from_record); a config file that uses an old key is refused.
MOVED = {"pretrain.attribute_weight": "experimental.attribute_weight",
         "finetune.last_weight": "experimental.last_weight",
         "pretrain.augmentations": "experimental.pretrain_augmentations",
         "finetune.augmentations": "experimental.finetune_augmentations",
         **{f"finetune.triplet_{k}": f"experimental.triplet_{k}" for k in ("weight", "loss", "margin", "negatives")}}


@dataclasses.dataclass
class RunConfig:
    seed: int = 0
    # Which split the run trains and validates on: "loo" (chronological leave-one-out),
    # "random" (random 80/20 rows, the TFRS tutorials' protocol) or "cold" (10% of items
    # held out entirely).  Pretraining for a task must use the task's split, or the
    # backbone would have seen the test rows.
    split: str = "loo"
    # Leave-one-out only: after the settings (epochs included) were chosen on the validation
    # item, train again on the training *and* validation items, as the final model for the
    # test split.  The run then keeps its last epoch (no model selection, no early stopping),
    # and its validation figures are no longer held out.
    refit: bool = False
    # tf.distribute strategy: "mirrored" (every local GPU, or the CPU), "default", "one-device", or
    # "multi-worker" (MultiWorkerMirroredStrategy over the cluster in TF_CONFIG; docs/scaling.md).
    strategy: str = "mirrored"
    # Make TensorFlow ops deterministic (repeatable runs on one machine).
    deterministic: bool = True
    # Exclude the items of the user's history when ranking.
    exclude_history: bool = True
    eval_batch_size: int = 1024
    # Validate on this many users, drawn once with the seed (0 = every user): for catalogues and
    # user bases so large that full-ranking validation every few epochs would cost too much.
    valid_users: int = 0
    # Back up the training state every this many steps (and at every epoch end).
    backup_every_steps: int = 100
    # Per-epoch checkpoints kept.
    keep_checkpoints: int = 3
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    pretrain: PretrainConfig = dataclasses.field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = dataclasses.field(default_factory=FinetuneConfig)
    tasks: TaskConfig = dataclasses.field(default_factory=TaskConfig)
    experimental: ExperimentalConfig = dataclasses.field(default_factory=ExperimentalConfig)
    privacy: PrivacyConfig = dataclasses.field(default_factory=PrivacyConfig)
    federated: FederatedConfig = dataclasses.field(default_factory=FederatedConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "config") -> "RunConfig":
        for old, new in MOVED.items():
            section, key = old.split(".")
            if isinstance(data, dict) and isinstance(data.get(section), dict) and key in data[section]:
                raise TfrecError(f"{where}: {old} is now {new} (an experimental setting: its ablation found no "
                                 "gain, or none has been run); move it there")
        config = _build(cls, data, where)
        config.validate(where)
        return config

    @classmethod
    def from_record(cls, data: dict, where: str = "run record") -> "RunConfig":
        """The config a run recorded (its run.json or saved model), written with the names of then:
        settings that have since moved (:data:`MOVED`) are read at their new place."""
        data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
        for old, new in MOVED.items():
            section, key = old.split(".")
            if key in data.get(section, {}):
                value = data[section].pop(key)
                data.setdefault("experimental", {})[new.split(".")[1]] = value
        data.get("tasks", {}).pop("augmentations", None)
        return cls.from_dict(data, where)

    def validate(self, where: str = "config") -> None:
        """Checks the settings that take one of a few names."""
        choices = [("strategy", self.strategy, STRATEGIES), ("finetune.examples", self.finetune.examples, EXAMPLES),
                   ("pretrain.objective", self.pretrain.objective, PRETRAIN_OBJECTIVES),
                   ("experimental.triplet_loss", self.experimental.triplet_loss, ("margin", "infonce")),
                   ("pretrain.lr_schedule", self.pretrain.lr_schedule, LR_SCHEDULES),
                   ("finetune.lr_schedule", self.finetune.lr_schedule, LR_SCHEDULES),
                   ("finetune.trainable", self.finetune.trainable, TRAINABLE),
                   ("tasks.lr_schedule", self.tasks.lr_schedule, LR_SCHEDULES),
                   ("split", self.split, SPLITS), ("tasks.objective", self.tasks.objective, OBJECTIVES)]
        for key, value, known in choices:
            if value not in known:
                raise TfrecError(f"{where}: unknown {key} {value!r}; use {' or '.join(known)}")
        if self.tasks.user_id and not self.tasks.user_params:
            raise TfrecError(f"{where}: tasks.user_id embeds each user's id, and tasks.user_params: false keeps no "
                             "parameter of any user; choose one")
        if not 0 < self.finetune.fraction <= 1:
            raise TfrecError(f"{where}: finetune.fraction is a share of the labels, above 0 and at most 1, "
                             f"not {self.finetune.fraction}")
        if self.finetune.adapter_rank < 1:
            raise TfrecError(f"{where}: finetune.adapter_rank must be at least 1, not {self.finetune.adapter_rank}")
        if not self.finetune.contrastive_temperature > 0:
            raise TfrecError(f"{where}: finetune.contrastive_temperature must be positive, "
                             f"not {self.finetune.contrastive_temperature}")
        x = self.experimental
        if not x.last_weight > 0:
            raise TfrecError(f"{where}: experimental.last_weight must be a positive weight, not {x.last_weight}")
        if self.finetune.examples == "causal" and (x.last_weight != 1 or x.finetune_augmentations):
            raise TfrecError(f"{where}: finetune.examples causal trains every position of a history at once; "
                             "it takes neither experimental.last_weight nor experimental.finetune_augmentations")
        if self.finetune.teacher:
            if self.finetune.examples != "all-prefixes":
                raise TfrecError(f"{where}: finetune.teacher (distillation) takes finetune.examples all-prefixes, "
                                 f"not {self.finetune.examples!r}")
            if not self.finetune.distill_temperature > 0 or not self.finetune.distill_top_k >= 1:
                raise TfrecError(f"{where}: distillation needs a positive finetune.distill_temperature and "
                                 "finetune.distill_top_k of at least 1")
        unread = [k for k in TaskConfig.UNREAD if getattr(self.tasks, k) != getattr(TaskConfig(), k)]
        if unread:
            raise TfrecError(f"{where}: tasks.{unread[0]} is not read by the TFRS tasks (it applies to pretrain "
                             "and finetune); remove it")
        p = self.privacy
        if p.noise_multiplier < 0 or p.target_epsilon < 0 or not p.l2_clip > 0 or not 0 <= p.delta < 1:
            raise TfrecError(f"{where}: privacy takes noise_multiplier and target_epsilon of 0 or more, a positive "
                             "l2_clip and a delta in [0, 1)")
        if p.unit not in ("user", "example"):
            raise TfrecError(f"{where}: unknown privacy.unit {p.unit!r}; use user or example")
        if not isinstance(p.stages, list) or not set(p.stages) <= {"pretrain", "finetune"}:
            raise TfrecError(f"{where}: privacy.stages lists pretrain and/or finetune, not {p.stages!r}")
        f = self.federated
        if f.clients < 2 or f.rounds < 1 or f.local_epochs < 1 or not 0 < f.fraction <= 1:
            raise TfrecError(f"{where}: federated takes at least 2 clients, 1 round and 1 local epoch, and a "
                             "fraction in (0, 1]")
        if f.noise_multiplier < 0 or f.clip_norm < 0 or (f.noise_multiplier > 0 and not f.clip_norm > 0):
            raise TfrecError(f"{where}: federated.noise_multiplier needs a positive federated.clip_norm (each "
                             "client's update is clipped to it before the noise)")
        if self.refit and self.split != "loo":
            raise TfrecError(f"{where}: refit trains on the validation items of the leave-one-out split; "
                             f"it does not apply to split {self.split!r}")

    @classmethod
    def from_file(cls, path: str) -> "RunConfig":
        return cls.from_dict(read_mapping(path), where=path)

    def updated(self, overrides: dict, where: str = "options") -> "RunConfig":
        """A copy with dotted-key overrides applied (``{"pretrain.epochs": 3}``)."""
        data = self.to_dict()
        for key, value in overrides.items():
            if value is None:
                continue
            node = data
            parts = key.split(".")
            for p in parts[:-1]:
                node = node[p]
            node[parts[-1]] = value
        return self.from_dict(data, where)


def read_mapping(path: str) -> dict:
    if not os.path.isfile(path):
        raise TfrecError(f"config file {path} does not exist")
    with open(path) as f:
        text = f.read()
    try:
        if path.endswith(".json"):
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # yaml and json raise many kinds
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TfrecError(f"config file {path} cannot be parsed: {first}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TfrecError(f"config file {path} must hold a mapping of settings")
    return data


def _build(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise TfrecError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise TfrecError(f"{where}: unknown setting {unknown[0]!r}; known: {', '.join(fields)}")
    kwargs = {}
    for name, value in data.items():
        default = getattr(cls(), name)
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, f"{where}: {name}")
            continue
        kwargs[name] = _coerce(value, default, f"{where}: {name}")
    return cls(**kwargs)


def _coerce(value, default, where: str):
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise TfrecError(f"{where} must be true or false, got {value!r}")
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TfrecError(f"{where} must be an integer, got {value!r}")
        if value < 0:
            raise TfrecError(f"{where} must not be negative, got {value}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TfrecError(f"{where} must be a number, got {value!r}")
        if value < 0:
            raise TfrecError(f"{where} must not be negative, got {value}")
        return float(value)
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise TfrecError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if isinstance(default, list) and default and all(isinstance(v, str) for v in default):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise TfrecError(f"{where} must be a list of names, got {value!r}")
        return list(value)
    if isinstance(default, list):
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                                  for v in value):
            raise TfrecError(f"{where} must be a list of positive integers, got {value!r}")
        return list(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise TfrecError(f"{where} must be a string, got {value!r}")
        return value
    return value


def defaults_text() -> str:
    """``configs/default.yaml``: every setting of :class:`RunConfig` with its default and its comment
    (:mod:`tfrec.training.config_text`)."""
    from tfrec.training.config_text import defaults_text as text

    return text()


def write_defaults(path: str) -> None:
    from tfrec.training.config_text import write_defaults as write

    write(path)
