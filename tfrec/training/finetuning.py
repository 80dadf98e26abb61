"""One ``finetune(task=...)`` for every task: next-item and the TFRS tasks behind one call.

The command line, the pipeline's finetune step and the quickstart call it; the two trainers it
dispatches to share the run scaffold of :mod:`tfrec.training.runs`.
"""

from __future__ import annotations

from tfrec import contract
from tfrec.errors import TfrecError
from tfrec.training.config import RunConfig


def finetune(data_dir: str, out: str, config: RunConfig | None = None, pretrained: str | None = None,
             task: str = contract.NEXT_ITEM, overwrite: bool = False, verbose=None,
             preprocessor: str | None = None) -> dict:
    """Fine-tunes `task` (one of :data:`tfrec.contract.TASKS`) on the prepared dataset at `data_dir` into
    the run folder `out`, from the backbone (and head) of `pretrained`, or from scratch when it is None.
    `preprocessor`: the artifact of the pipeline's transform step; the run is refused unless it is this
    dataset's preprocessor for this model's length, and the run folder records which one it used.
    Returns the run's record (its ``summary`` holds the validation figures)."""
    config = config or RunConfig()
    if preprocessor:
        from tfrec.training.runs import record_preprocessor

        spec = record_preprocessor(preprocessor, data_dir, config.model.max_len)
        record = _dispatch(data_dir, out, config, pretrained, task, overwrite, verbose)
        record_preprocessor(preprocessor, data_dir, config.model.max_len, out, spec)
        return record
    return _dispatch(data_dir, out, config, pretrained, task, overwrite, verbose)


def _dispatch(data_dir, out, config, pretrained, task, overwrite, verbose) -> dict:
    if task == contract.NEXT_ITEM:
        from tfrec.training import trainer

        return trainer.finetune(data_dir, out, config, pretrained=pretrained, task=task, overwrite=overwrite,
                                verbose=verbose)
    if task in contract.TFRS_TASKS:
        from tfrec.training import task_trainer

        return task_trainer.finetune_task(data_dir, out, config, pretrained=pretrained, task=task,
                                          overwrite=overwrite, verbose=verbose)
    raise TfrecError(f"unknown task {task!r}; known: {', '.join(contract.TASKS)}")
