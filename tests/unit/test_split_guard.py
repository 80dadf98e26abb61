"""A backbone pretrained on another draw of a random or cold split is refused: it may have trained on the
new run's held-out rows or cold test items."""

import pytest

from tfrec.errors import TfrecError
from tfrec.training.config import RunConfig
from tfrec.training.task_trainer import check_same_split


def test_cold_split_needs_the_same_seed_and_shares():
    run = RunConfig.from_dict({"split": "cold", "seed": 1})
    check_same_split(run.to_dict(), run, "P")  # the same draw
    with pytest.raises(TfrecError, match="with seed 0 and this run with 1.*pretrain with the same seed"):
        check_same_split(RunConfig.from_dict({"split": "cold"}).to_dict(), run, "P")
    with pytest.raises(TfrecError, match="tasks.cold_fraction 0.2 .* cold test items"):
        check_same_split(RunConfig.from_dict({"split": "cold", "seed": 1, "tasks": {"cold_fraction": 0.2}}).to_dict(),
                         run, "P")


def test_random_split_needs_the_same_validation_draw_and_loo_needs_nothing():
    run = RunConfig.from_dict({"split": "random"})
    with pytest.raises(TfrecError, match="tasks.valid_fraction 0.1 .* held-out rows"):
        check_same_split(RunConfig.from_dict({"split": "random", "tasks": {"valid_fraction": 0.1}}).to_dict(), run, "P")
    # cold_fraction does not pick anything in the random split
    check_same_split(RunConfig.from_dict({"split": "random", "tasks": {"cold_fraction": 0.3}}).to_dict(), run, "P")
    check_same_split(RunConfig.from_dict({"seed": 5}).to_dict(), RunConfig(), "P")
