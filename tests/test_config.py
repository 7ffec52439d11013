"""Configuration: shipped YAMLs, the authors' UPPER_CASE files, overrides and errors."""

import pytest

from textreid.config import (
    Config,
    ConfigError,
    apply_overrides,
    dump_yaml,
    from_dict,
    list_packaged_configs,
    load_config,
    to_dict,
)

AUTHORS_STYLE = """\
MODEL:
  WEIGHT: "imagenet"
  FREEZE: False
  VISUAL_MODEL: "m_resnet101"
  TEXTUAL_MODEL: "bigru"
  NUM_CLASSES: 11003
  GRU:
    ONEHOT: "clip_vit"
    VOCABULARY_SIZE: 512
    DROPOUT_KEEP_PROB: 1.0
  RESNET:
    RES5_STRIDE: 1
  EMBEDDING:
    EMBED_HEAD: 'moco'
    FEATURE_SIZE: 256
  MOCO:
    FC: False
    K: 2048
INPUT:
  PIXEL_MEAN: [0.48145466, 0.4578275, 0.40821073]
DATASETS:
  TRAIN: ("cuhkpedes_train", )
  TEST: ("cuhkpedes_test", )
SOLVER:
  IMS_PER_BATCH: 128
  BASE_LR: 0.0001
  STEPS: (40, 70)
TEST:
  IMS_PER_BATCH: 128
"""


@pytest.mark.parametrize("name", list_packaged_configs())
def test_every_shipped_config_loads(name):
    cfg = load_config(name)
    assert cfg.model.visual_model
    assert cfg.datasets.train and cfg.datasets.test
    assert cfg.solver.ims_per_batch % cfg.dataloader.ims_per_id == 0
    if cfg.model.embedding.embed_head == "moco":
        assert cfg.model.moco.k % cfg.solver.ims_per_batch == 0


def test_the_five_paper_configs_are_shipped():
    names = set(list_packaged_configs())
    for n in ["baseline_gru_rn50_ls_bs128", "baseline_gru_cliprn50_ls_bs128", "baseline_gru_cliprn101_ls_bs128",
              "moco_gru_cliprn50_ls_bs128_2048", "moco_gru_cliprn101_ls_bs128_2048"]:
        assert f"cuhkpedes/{n}" in names
    main = load_config("cuhkpedes/moco_gru_cliprn50_ls_bs128_2048")
    assert (main.input.height, main.input.width) == (384, 128)
    assert main.model.resnet.res5_stride == 1
    assert main.model.moco.k == 2048 and main.model.moco.m == 0.999
    assert main.solver.base_lr == 1e-4 and main.solver.weight_decay == 4e-5
    assert main.solver.steps == [40, 70] and main.solver.num_epochs == 80


def test_authors_upper_case_file_loads_unchanged(tmp_path):
    path = tmp_path / "moco.yaml"
    path.write_text(AUTHORS_STYLE)
    cfg = load_config(path)
    assert cfg.model.visual_model == "m_resnet101"
    assert cfg.model.gru.onehot == "clip_vit"
    assert cfg.model.embedding.embed_head == "moco"
    assert cfg.model.moco.fc is False and cfg.model.moco.k == 2048
    assert cfg.datasets.train == ["cuhkpedes_train"]  # the yacs tuple string
    assert cfg.solver.steps == [40, 70]
    assert cfg.input.pixel_mean[0] == pytest.approx(0.48145466)


def test_overrides_both_spellings_and_types():
    cfg = load_config(None, ["SOLVER.BASE_LR", "2e-4", "solver.num_epochs", "3", "MODEL.MOCO.FC", "True",
                             "MODEL.RESNET.LAYERS", "[1, 1, 1, 1]", "DATASETS.TEST", '("synth_test", )'])
    assert cfg.solver.base_lr == 2e-4 and isinstance(cfg.solver.base_lr, float)
    assert cfg.solver.num_epochs == 3 and cfg.model.moco.fc is True
    assert cfg.model.resnet.layers == [1, 1, 1, 1]
    assert cfg.datasets.test == ["synth_test"]


def test_unknown_key_names_the_nearest_valid_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"SOLVER\.BASE_LRR.*SOLVER\.BASE_LR"):
        apply_overrides(Config(), ["SOLVER.BASE_LRR", "1"])
    path = tmp_path / "bad.yaml"
    path.write_text("MODEL:\n  MOCCO:\n    K: 4\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*MODEL\.MOCCO.*MODEL\.MOCO"):
        load_config(path)


def test_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError, match=r"SOLVER\.NUM_EPOCHS.*int.*'many'"):
        apply_overrides(Config(), ["SOLVER.NUM_EPOCHS", "many"])
    with pytest.raises(ConfigError, match="pairs"):
        apply_overrides(Config(), ["SOLVER.NUM_EPOCHS"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "broken.yaml"
    bad.write_text("MODEL: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_config(bad)


def test_round_trip_through_dict_and_yaml(tmp_path):
    cfg = load_config("synth/tiny_moco", ["SOLVER.SEED", "7"])
    assert to_dict(from_dict(to_dict(cfg))) == to_dict(cfg)
    path = tmp_path / "dumped.yaml"
    path.write_text(dump_yaml(cfg))
    assert to_dict(load_config(path)) == to_dict(cfg)
