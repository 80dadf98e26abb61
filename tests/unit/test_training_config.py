import dataclasses
import json

import pytest

from tfrec.errors import TfrecError
from tfrec.training.config import RunConfig


def test_defaults_round_trip_and_overrides(tmp_path):
    c = RunConfig()
    assert RunConfig.from_dict(c.to_dict()) == c
    d = c.updated({"pretrain.epochs": 3, "model.hidden_dim": 32, "seed": 9,
                   "experimental.finetune_augmentations": {"mask": 0.1}})
    assert (d.pretrain.epochs, d.model.hidden_dim, d.seed, d.experimental.finetune_augmentations) == (
        3, 32, 9, {"mask": 0.1})
    assert d.finetune.epochs == c.finetune.epochs  # the other stage keeps its own setting
    p = tmp_path / "c.yaml"
    p.write_text("seed: 4\nmodel:\n  num_layers: 1\npretrain:\n  mask_rate: 0.4\n")
    f = RunConfig.from_file(str(p))
    assert (f.seed, f.model.num_layers, f.pretrain.mask_rate, f.pretrain.epochs) == (4, 1, 0.4, RunConfig().pretrain.epochs)
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"finetune": {"learning_rate": 1}}))
    assert RunConfig.from_file(str(j)).finetune.learning_rate == 1.0


@pytest.mark.parametrize("text, message", [
    ("pretrain:\n  mask_rat: 0.4\n", "unknown setting 'mask_rat'"),
    ("model:\n  hidden_dim: wide\n", "hidden_dim must be an integer"),
    ("pretrain:\n  learning_rate: -1\n", "must not be negative"),
    ("model: 3\n", "expected a mapping"),
    ("- a\n- b\n", "must hold a mapping"),
    ("seed: [1\n", "cannot be parsed"),
    ("deterministic: 1\n", "must be true or false"),
    ("strategy: tpu\n", "unknown strategy 'tpu'"),
    ("finetune:\n  examples: some\n", "unknown finetune.examples"),
    ("pretrain:\n  lr_schedule: wavy\n", "unknown pretrain.lr_schedule"),
    ("experimental:\n  last_weight: 0\n", "last_weight must be a positive weight"),
    ("finetune:\n  last_weight: 2\n", "finetune.last_weight is now experimental.last_weight"),
    ("pretrain:\n  attribute_weight: 1\n", "pretrain.attribute_weight is now experimental.attribute_weight"),
    ("finetune:\n  triplet_weight: 1\n", "finetune.triplet_weight is now experimental.triplet_weight"),
    ("experimental:\n  triplet_loss: hinge\n", "unknown experimental.triplet_loss"),
    ("finetune:\n  contrastive_temperature: 0\n", "contrastive_temperature must be positive"),
    ("finetune:\n  contrastive_weight: -0.1\n", "must not be negative"),
    ("finetune:\n  examples: causal\nexperimental:\n  last_weight: 2\n", "takes neither experimental.last_weight"),
    ("finetune:\n  examples: every\n", "use all-prefixes or random-prefix or causal"),
    ("finetune:\n  examples: causal\n  teacher: t\n", "teacher \\(distillation\\) takes finetune.examples"),
    ("finetune:\n  teacher: t\n  distill_temperature: 0\n", "positive finetune.distill_temperature"),
    ("finetune:\n  teacher: t\n  distill_top_k: 0\n", "distill_top_k of at least 1"),
    ("finetune:\n  output_extra_dim: -8\n", "output_extra_dim"),
    ("finetune:\n  output_extra_dim: wide\n", "output_extra_dim"),
    ("finetune:\n  output_last_item: sometimes\n", "output_last_item"),
])
def test_bad_config_files_say_what_is_wrong(tmp_path, text, message):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(TfrecError, match=message):
        RunConfig.from_file(str(p))


def test_missing_config_file(tmp_path):
    with pytest.raises(TfrecError, match="does not exist"):
        RunConfig.from_file(str(tmp_path / "nope.yaml"))


def test_committed_configs_parse():
    import glob
    import os

    from tests.conftest import REPO

    files = glob.glob(os.path.join(REPO, "configs", "*.yaml")) + glob.glob(os.path.join(REPO, "tfrec", "configs", "*.yaml"))
    assert files, "configs/ holds the committed run configs"
    from tfrec.pipeline.runner import load_config
    from tfrec.training.config import read_mapping

    pipelines = glob.glob(os.path.join(REPO, "pipelines", "configs", "*.yaml"))
    for path in files:
        if "run_config" in read_mapping(path):  # a pipeline config (the packaged quickstart's)
            pipelines.append(path)
        else:
            RunConfig.from_file(path)
    assert len(pipelines) >= 3
    for path in pipelines:  # each names a run config that parses, and a data source
        config = load_config(path, "/data", "/pipe", "/serving")
        assert config.data["source"] and config.tasks and RunConfig.from_dict(config.run_config)


def test_a_pipeline_configs_export_and_push_settings_are_checked(tmp_path):
    import pytest
    import yaml

    from tests.conftest import REPO
    from tfrec.errors import TfrecError
    from tfrec.pipeline.runner import load_config
    from tfrec.training.config import read_mapping

    base = read_mapping(f"{REPO}/pipelines/configs/movielens-100k.yaml")
    base["run_config"] = f"{REPO}/configs/ml-100k.yaml"
    for change, message in (
            ({"export": {"name": "m", "topk": 5}}, r"unknown export setting\(s\) topk; the settings are task, name, "
                                                    r"top_k, explain_window"),
            ({"export": {"task": "next-item"}}, "export lacks name"),
            ({"export": ["m"]}, "export must be a mapping"),
            ({"push": {"min_delta": 0.1, "kept": 2}}, r"unknown push setting\(s\) kept")):
        path = tmp_path / "p.yaml"
        path.write_text(yaml.safe_dump(dict(base, **change)))
        with pytest.raises(TfrecError, match=message):
            load_config(str(path), "/data", "/pipe", "/serving")
    path.write_text(yaml.safe_dump(dict(base, export={"name": "m", "explain_window": 0})))
    assert load_config(str(path), "/data", "/pipe", "/serving").export["explain_window"] == 0


def test_configs_default_yaml_is_generated_from_the_dataclasses_and_complete():
    import os

    from tfrec.training import config as cfg

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "configs", "default.yaml")
    with open(path, encoding="utf-8") as f:
        committed = f.read()
    assert committed == cfg.defaults_text(), (
        "configs/default.yaml is out of date; regenerate it with "
        "python -c \"from tfrec.training.config import write_defaults; write_defaults('configs/default.yaml')\"")
    # read back, it is exactly the defaults: every setting is there, with its default value
    assert cfg.RunConfig.from_file(path) == cfg.RunConfig()
    data = cfg.read_mapping(path)
    for section in ("model", "pretrain", "finetune", "tasks"):
        fields = {f.name for f in dataclasses.fields(getattr(cfg.RunConfig(), section))}
        unread = set(getattr(type(getattr(cfg.RunConfig(), section)), "UNREAD", ()))
        assert set(data[section]) == fields - unread, section


def test_settings_the_tfrs_tasks_do_not_read_are_refused():
    from tfrec.training.config import RunConfig

    for key, value in (("num_sampled", 100), ("validate_every", 2)):
        with pytest.raises(TfrecError, match=f"tasks.{key} is not read by the TFRS tasks"):
            RunConfig.from_dict({"tasks": {key: value}})


def test_records_of_runs_made_before_the_experimental_section_are_read_at_the_new_place():
    from tfrec.training.config import RunConfig

    old = RunConfig().to_dict()
    experimental = old.pop("experimental")
    old["pretrain"].update(attribute_weight=0.5, augmentations={"crop": 0.2})
    old["finetune"].update(last_weight=3.0, augmentations={}, triplet_weight=0.1, triplet_loss="infonce",
                           triplet_margin=1.0, triplet_negatives=8)
    old["tasks"]["augmentations"] = {}
    config = RunConfig.from_record(old)
    assert config.experimental.attribute_weight == 0.5 and config.experimental.last_weight == 3.0
    assert config.experimental.pretrain_augmentations == {"crop": 0.2}
    assert (config.experimental.triplet_weight, config.experimental.triplet_loss) == (0.1, "infonce")
    assert set(config.to_dict()["experimental"]) == set(experimental)
    with pytest.raises(TfrecError, match="is now experimental"):
        RunConfig.from_dict(old)
