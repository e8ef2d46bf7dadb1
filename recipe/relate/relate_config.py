"""The Hydra ``relate:`` section: the reward config (``reward_fns.RewardConfig``: preset, weights,
alpha, lambda1, lambda2, Delta_d, ...) plus the few keys only the verl recipe needs.

Defaults live in the dataclasses only (``RecipeConfig`` below, ``reward_fns.config``): the package
registers them with Hydra as the config ``relate_defaults`` (:func:`register_hydra_defaults`), which
``config/relate_trainer.yaml`` lists first, so the yaml repeats none of them and every key of the section
can still be overridden as ``relate.<section>.<key>=...`` (Hydra refuses to override a key the composed
config lacks; ``weights`` and ``token_level`` come from the preset, add them with ``+relate.weights.<c>=``).

    relate:
      preset: relate              # model1 | model2 | model3 | model4 | relate  (paper Table 2)
      credit: {alpha: 1.0}        # any RewardConfig field, merged over the preset
      ctcvr_model_dir: /models/ctcvr
      sentence_estimator: grpo_vectorized
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from reward_fns import RewardConfig


@dataclass(frozen=True)
class RecipeConfig:
    """Recipe-only keys of the ``relate:`` section (everything else is the reward config)."""

    # ctcvr_model directory (python -m ctcvr_model.train); required when the preset weights ctcvr.
    ctcvr_model_dir: str | None = None
    # verl GRPO used for eq. 8: grpo_vectorized is verl's fast path; grpo the reference loop.
    sentence_estimator: str = "grpo_vectorized"
    # Micro-batcher of the CTCVR scorer in each reward worker: verl scores one sample per call.
    scorer_max_batch_size: int = 64
    scorer_max_wait_ms: float = 5.0
    # Seconds between the replay buffer's TransferQueue polls while it waits for a step's samples
    # (verl's fixed default is 2.0 s, about 2 s per step); null keeps verl's value.
    replay_poll_interval_s: float | None = None
    # Device of the reward scorer (CTCVR net and its text encoder, the relevance encoders) where the
    # reward is computed: verl's reward-loop workers reserve no GPU (reward_loop.py:308,324-340), so the verl
    # run keeps it on "cpu" (recipe/relate/preflight.py refuses cuda there).
    scorer_device: str = "cpu"
    # Reward components computed per training sample: "active" (the preset's, the reward's cost) or
    # "all" (ours, for the ablation's Figure 3: every component is logged for every preset, so the
    # curves of Model 1 show the CTCVR and semantic quality it is not rewarded for). The sentence
    # reward is the preset's either way (reward_fns.compose.sentence_reward sums only its weights).
    log_components: str = "active"
    # torch and BLAS threads of each reward-loop worker process (set once in RelateRewardManager.init_class);
    # None leaves what Ray gave the actor: one thread (ray/_private/utils.py:256-271). The GPU scripts size it
    # and reward.num_workers from the node (examples/run_relate_qwen3_8b.sh; README "Reward workers").
    reward_threads: int | None = None
    # Compose and validate the config, print it, and exit without starting Ray (CPU-checkable).
    dry_run: bool = False
    # Dry run only: inputs an earlier step of examples/run_pipeline_qwen3_8b.sh will write (files, or folders
    # whose contents count as written). The preflight reports them as pending instead of missing; a real launch
    # ignores this and needs every input present.
    pending_inputs: tuple[str, ...] = ()


RECIPE_KEYS = tuple(f.name for f in dataclasses.fields(RecipeConfig))
# Keys the preset sets (paper Table 2); a default here would replace the preset's wholesale.
PRESET_KEYS = ("weights", "token_level")
HYDRA_DEFAULTS_NAME = "relate_defaults"


def relate_section_defaults() -> dict[str, Any]:
    """The ``relate:`` section of the dataclass defaults: every ``RewardConfig`` field but PRESET_KEYS,
    then every ``RecipeConfig`` field; plain YAML values (lists, not tuples)."""
    reward = {k: v for k, v in RewardConfig().to_dict().items() if k not in PRESET_KEYS}
    recipe = {f.name: getattr(RecipeConfig(), f.name) for f in dataclasses.fields(RecipeConfig)}
    recipe["pending_inputs"] = list(recipe["pending_inputs"])
    return {**reward, **recipe}


def register_hydra_defaults() -> None:
    """Store :func:`relate_section_defaults` in Hydra's ConfigStore as ``relate_defaults`` (the first
    entry of relate_trainer.yaml's defaults list after verl's ppo_trainer)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=HYDRA_DEFAULTS_NAME, node={"relate": relate_section_defaults()})


def to_plain(section: Any) -> dict[str, Any]:
    """A Hydra/OmegaConf node or a mapping as a plain dict."""
    if section is None:
        return {}
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(section, DictConfig):
            return OmegaConf.to_container(section, resolve=True)  # type: ignore[return-value]
    except ImportError:  # pragma: no cover - omegaconf ships with verl
        pass
    return dict(section)


def split_relate_section(section: Any) -> tuple[RecipeConfig, RewardConfig]:
    """Split the ``relate:`` section into recipe keys and a validated ``RewardConfig``.

    Raises ``reward_fns.ConfigError`` (naming the key) on unknown or invalid values and
    ``ValueError`` when the preset needs a CTCVR model and none is configured.
    """
    data = to_plain(section)
    recipe = RecipeConfig(**{k: data.pop(k) for k in RECIPE_KEYS if k in data})
    if not isinstance(recipe.pending_inputs, (list, tuple)):
        raise ValueError(f"relate.pending_inputs must be a list of paths, got {recipe.pending_inputs!r}")
    recipe = dataclasses.replace(recipe, pending_inputs=tuple(str(p) for p in recipe.pending_inputs))
    reward = RewardConfig.from_dict(data)
    if recipe.replay_poll_interval_s is not None and not recipe.replay_poll_interval_s > 0:
        raise ValueError(f"relate.replay_poll_interval_s must be > 0 or null, got {recipe.replay_poll_interval_s!r}")
    if not isinstance(recipe.scorer_device, str) or not re.fullmatch(r"cpu|cuda(:\d+)?|mps|xpu(:\d+)?", recipe.scorer_device):
        raise ValueError(f"relate.scorer_device must be cpu, cuda, cuda:N, mps or xpu[:N], got {recipe.scorer_device!r}")
    if recipe.reward_threads is not None and not (isinstance(recipe.reward_threads, int) and recipe.reward_threads >= 1):
        raise ValueError(f"relate.reward_threads must be a whole number >= 1 or null, got {recipe.reward_threads!r}")
    if recipe.log_components not in ("active", "all"):
        raise ValueError(f"relate.log_components must be 'active' or 'all', got {recipe.log_components!r}")
    if recipe.log_components == "all" and not recipe.ctcvr_model_dir:
        raise ValueError("relate.log_components=all logs the CTCVR component of every preset: set relate.ctcvr_model_dir")
    # imported here: the package imports this module to register the defaults, and the estimators need verl
    from recipe.relate.relate_core_algos import SENTENCE_ESTIMATORS

    if recipe.sentence_estimator not in SENTENCE_ESTIMATORS:
        raise ValueError(f"relate.sentence_estimator must be one of {SENTENCE_ESTIMATORS}, got {recipe.sentence_estimator!r}")
    if "ctcvr" in reward.weights and not recipe.ctcvr_model_dir:
        raise ValueError(
            f"relate.preset={reward.preset} rewards CTCVR: set relate.ctcvr_model_dir to a model trained with "
            "`python -m ctcvr_model.train` (or use preset model1, which has no CTCVR reward)"
        )
    return recipe, reward
