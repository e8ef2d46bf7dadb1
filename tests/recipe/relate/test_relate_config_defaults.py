"""The relate: section's defaults live in the dataclasses only; relate_trainer.yaml repeats none of them,
and every override path (relate.<section>.<key>=..., presets, +relate.weights...) still works."""

from __future__ import annotations


import pytest
import yaml

from recipe.relate.relate_config import RecipeConfig, relate_section_defaults, split_relate_section
from reward_fns.config import preset

from tests.fixtures import REPO as REPO_ROOT

CONFIG_DIR = REPO_ROOT / "recipe" / "relate" / "config"


def leaves(node, prefix=""):
    """{dotted key: value} of the leaves of a nested mapping (an empty mapping is a leaf)."""
    if isinstance(node, dict) and node:
        return {k: v for key, sub in node.items() for k, v in leaves(sub, f"{prefix}.{key}" if prefix else key).items()}
    return {prefix: node}


def compose(overrides=()):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return hydra_compose(config_name="relate_trainer", overrides=list(overrides))


@pytest.mark.parametrize("name", ["relate_trainer.yaml", "backend/cpu.yaml"])
def test_yaml_writes_no_relate_value_equal_to_the_dataclass_default(name):
    written = (yaml.safe_load((CONFIG_DIR / name).read_text(encoding="utf-8")) or {}).get("relate") or {}
    defaults = leaves(relate_section_defaults())
    for key, value in (leaves(written) if written else {}).items():
        assert key in defaults, f"relate.{key} in {name} is no field of RecipeConfig / RewardConfig"
        assert value != defaults[key], f"relate.{key} in {name} repeats the dataclass default {value!r}"


def test_composed_section_is_the_dataclass_defaults():
    from omegaconf import OmegaConf

    assert OmegaConf.to_container(compose().relate, resolve=True) == relate_section_defaults()
    recipe, reward = split_relate_section(compose(["relate.ctcvr_model_dir=/m"]).relate)
    assert recipe == RecipeConfig(ctcvr_model_dir="/m") and reward.to_dict() == preset("relate").to_dict()


def test_every_override_path_still_works():
    config = compose(["relate.preset=model3", "relate.credit.alpha=0.5", "relate.diversity.delta_d=0.1",
                      "relate.length.decay=0.25", "relate.ctcvr_model_dir=/m", "relate.scorer_device=cpu",
                      "+relate.weights.length=2", "backend=cpu"])
    recipe, reward = split_relate_section(config.relate)
    assert reward.preset == "model3" and reward.credit.alpha == 0.5 and reward.diversity.delta_d == 0.1
    assert reward.length.decay == 0.25 and reward.weights == {"length": 2}  # weights replace the preset's
    assert recipe.ctcvr_model_dir == "/m" and recipe.replay_poll_interval_s == 0.05  # backend=cpu's value
    recipe, reward = split_relate_section(compose(["relate.preset=model1"]).relate)
    assert reward.weights == preset("model1").weights and recipe.ctcvr_model_dir is None
