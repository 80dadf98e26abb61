"""Multi-worker training on TensorFlow's own engine: the cluster comes from ``TF_CONFIG``.

``--strategy multi-worker`` builds a ``tf.distribute.MultiWorkerMirroredStrategy``: every
worker runs the same command, holds a copy of every variable, and gradients are all-reduced
each step, so the workers keep identical weights.  The chief (task type ``chief``, or worker 0
when the cluster has no chief) writes the run folder; the other workers make the same saves
into a scratch folder of their own that is removed afterwards, because a save may read values
that every worker must take part in.  See ``docs/scaling.md``.

On a dataset prepared with ``--format tfrecord``, each worker reads only its own sequence shards
(:class:`WorkerShare`: every N-th shard from its index) and builds its own input pipeline, fed to
``fit`` through a ``DatasetCreator``; the few figures that need every worker's data (item counts, the
number of examples, the validation metrics) are summed across workers by an all-reduce.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from tfrec.errors import TfrecError

TF_CONFIG = "TF_CONFIG"


def read_tf_config() -> dict:
    """The parsed ``TF_CONFIG``; one clear sentence when it is missing or malformed."""
    text = os.environ.get(TF_CONFIG)
    if not text:
        raise TfrecError("the multi-worker strategy reads its cluster from the TF_CONFIG environment variable, "
                         "which is not set (see docs/scaling.md)")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise TfrecError(f"TF_CONFIG is not valid JSON: {e.msg} at character {e.pos}") from None
    cluster, task = config.get("cluster") if isinstance(config, dict) else None, \
        config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster or not all(isinstance(v, list) and v for v in cluster.values()):
        raise TfrecError("TF_CONFIG needs a \"cluster\" mapping each task type to a list of host:port addresses")
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise TfrecError(f"TF_CONFIG's \"task\" must name a type of its cluster ({', '.join(cluster)}), "
                         f"got {task!r}")
    index = task.get("index", 0)
    if not isinstance(index, int) or not 0 <= index < len(cluster[task["type"]]):
        raise TfrecError(f"TF_CONFIG's task index {index!r} is not in 0..{len(cluster[task['type']]) - 1}")
    if set(cluster) - {"chief", "worker"}:
        raise TfrecError(f"the multi-worker strategy runs chief and worker tasks; TF_CONFIG also names "
                         f"{', '.join(sorted(set(cluster) - {'chief', 'worker'}))} (see docs/scaling.md for "
                         "parameter servers)")
    return config


def multi_worker_strategy() -> tf.distribute.MultiWorkerMirroredStrategy:
    read_tf_config()
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as e:  # collectives configured after TensorFlow started
        raise TfrecError(f"cannot start the multi-worker strategy: {str(e).splitlines()[0]}") from None


def task_of(strategy: tf.distribute.Strategy) -> tuple[str | None, int]:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return None, 0
    return resolver.task_type, int(resolver.task_id or 0)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the one worker that writes the run folder (always true on one machine)."""
    task_type, task_id = task_of(strategy)
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    has_chief = "chief" in strategy.cluster_resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


def worker_name(strategy: tf.distribute.Strategy) -> str:
    task_type, task_id = task_of(strategy)
    return "local" if task_type is None else f"{task_type}:{task_id}"


class WriteTarget:
    """Where this worker writes: the run folder on the chief, a scratch folder elsewhere."""

    def __init__(self, out: str, strategy: tf.distribute.Strategy):
        self.out, self.chief = out, is_chief(strategy)
        self.scratch = None if self.chief else tempfile.mkdtemp(prefix="tfrec-worker-")

    def path(self, *parts: str) -> str:
        return os.path.join(self.out if self.chief else self.scratch, *parts)

    def close(self) -> None:
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class WorkerShare:
    """This worker's part of a multi-worker job's input, and sums over every worker's part."""

    strategy: tf.distribute.Strategy
    index: int  # this worker's input pipeline (the chief first, then the workers in order)
    count: int  # the number of workers

    def shards(self, files: list[str], where: str) -> list[str]:
        """This worker's sequence shards: every `count`-th of `files` from `index`."""
        if len(files) < self.count:
            raise TfrecError(f"{where} has {len(files)} sequence shards for {self.count} workers; prepare it with "
                             f"--shards {self.count} or more, so that every worker reads shards of its own")
        return files[self.index::self.count]

    def all_sum(self, values) -> np.ndarray:
        """`values` (float64) summed over the workers; every worker must call it, in the same order."""
        values = np.asarray(values, dtype=np.float64)
        local = max(1, len(self.strategy.extended.worker_devices))

        def contribution():  # once per worker: its first local replica carries the worker's values
            first = tf.equal(tf.distribute.get_replica_context().replica_id_in_sync_group % local, 0)
            return tf.where(first, tf.constant(values), tf.zeros_like(values))

        total = self.strategy.reduce(tf.distribute.ReduceOp.SUM, self.strategy.run(contribution), axis=None)
        return np.asarray(total.numpy(), dtype=np.float64)

    def per_replica_batch(self, global_batch: int) -> int:
        """The batch each replica's pipeline makes of the stage's global batch."""
        replicas = self.strategy.num_replicas_in_sync
        if global_batch % replicas:
            raise TfrecError(f"the batch size {global_batch} does not split evenly over {replicas} replicas")
        return global_batch // replicas

    def dataset(self, dataset: tf.data.Dataset) -> "tf.keras.utils.experimental.DatasetCreator":
        """`fit`'s input from this worker's own pipeline (already batched per replica): not split again."""
        return tf.keras.utils.experimental.DatasetCreator(lambda context: dataset)


def worker_share(strategy: tf.distribute.Strategy) -> WorkerShare | None:
    """This worker's :class:`WorkerShare` in a job of several workers; None on one machine."""
    task_type, task_id = task_of(strategy)
    if task_type is None:
        return None
    spec = strategy.cluster_resolver.cluster_spec().as_dict()
    tasks = [("chief", i) for i in range(len(spec.get("chief", [])))] + \
        [("worker", i) for i in range(len(spec.get("worker", [])))]
    if len(tasks) < 2:
        return None
    return WorkerShare(strategy, tasks.index((task_type, task_id)), len(tasks))
