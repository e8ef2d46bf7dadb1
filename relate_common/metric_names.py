"""Names of the training metrics RELATE logs and reads, in one place.

The RELATE trainer (``recipe.relate.relate_trainer``) writes the ``relate/...`` metrics beside verl's
own; the report (``examples.report``), the plots, the CPU run summary (``examples.cpu_run``) and the
CPU ablation (``examples.ablation.cpu_ablation``) read them back from verl's FileLogger lines.
"""

from __future__ import annotations

# verl's (verl/trainer/ppo/metric_utils.py): the batch mean of the sequence score, here the sentence reward r_i.
SCORE_MEAN = "critic/score/mean"

# Per-sample keys of the reward manager's reward_extra_info: reward_<component> (NaN = not computed).
EXTRA_INFO_PREFIX = "reward_"
# Batch mean of each reward component the reward manager computed: relate/reward/<component>.
REWARD_PREFIX = "relate/reward/"
G_HIGH_SIZE = "relate/g_high_size"  # |G_high|, the batch's high-frequency n-grams
DIVERSITY_SCORE_MEAN = "relate/diversity_score/mean"  # eq. 4's score, logged whatever the preset
DIVERSITY_PENALTY_MEAN = "relate/diversity_penalty/mean"
# Mean tokens per response carrying a token penalty (eq. 5): relate/penalised_tokens/<source>.
PENALISED_TOKENS_PREFIX = "relate/penalised_tokens/"
PENALISED_TOKENS_BLACKLIST = PENALISED_TOKENS_PREFIX + "blacklist"
PENALISED_TOKENS_DIVERSITY = PENALISED_TOKENS_PREFIX + "diversity"
TOKEN_ADVANTAGE_SHARE = "relate/token_advantage_share"


def reward_metric(component: str) -> str:
    """The training metric of a reward component: ``relate/reward/<component>``."""
    return REWARD_PREFIX + component


def component_of(metric: str) -> str | None:
    """The component of a ``relate/reward/<component>`` metric, None for any other metric."""
    return metric[len(REWARD_PREFIX):] if metric.startswith(REWARD_PREFIX) else None
