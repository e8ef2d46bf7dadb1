"""Local mode: the RELATE algorithm in one process (CPU or one GPU), Hugging Face ``generate`` for rollouts.

    python -m recipe.relate.local_trainer relate.preset=model1 local.max_steps=30
    python -m recipe.relate.local_trainer relate.ctcvr_model_dir=/tmp/lm/ctcvr actor_rollout_ref.model.lora_rank=8

verl's stock workers cannot train on CPU; this trainer runs the same step with the same code:

=========================  =====================================================================
step                       shared implementation
=========================  =====================================================================
rollout                    ``recipe.relate.local_rollout.generate_responses`` (HF generate with
                           verl's sampling knobs; vLLM in the verl run)
sentence reward (eq. 2)    ``recipe.relate.scoring.SentenceScorer.score_many`` (the reward
                           manager's path: reward_fns, CTCVR scorer, judge client)
batch credit (eq. 4, 5)    ``recipe.relate.scoring.token_credit``; Models 3-4 add
                           ``sentence_diversity`` to r_i, as ``RelateTrainer`` does
advantage (eq. 7-9)        ``relate_core_algos.relate_advantage`` through the trainer's hand-over
actor loss (eq. 6)         ``recipe.relate.local_loss.actor_loss``: verl's policy loss
                           (``get_policy_loss_fn``), ``kl_penalty``, ``agg_loss``
optimizer, LR schedule     verl's ``build_optimizer`` and warm-up schedules, ``optim.clip_grad``
mini-batches               verl's ``make_iterator`` (``ppo_mini_batch_size`` prompts x n)
metrics                    verl's ``compute_data_metrics`` and ``RelateTrainer.relate_metrics``
=========================  =====================================================================

Config: ``config/relate_local.yaml`` = ``relate_trainer.yaml`` (the verl run's config) with CPU
sizes, plus a ``local:`` section. Keys read from the verl sections keep verl's meaning; keys that
would change the algorithm but that local mode does not implement raise (see ``check_supported``).

Outputs in ``local.output_dir``: ``metrics.csv`` (one row per step, ``val/`` columns on
validation steps), ``tensorboard/``, ``checkpoints/global_step_<k>/`` (written to a temporary
folder and renamed, so an interrupted save never looks complete), ``final/`` (a Hugging Face
model folder, LoRA merged) and ``config.yaml``.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import math
import os
import random
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from recipe.relate.relate_config import split_relate_section

CONFIG_DIR = Path(__file__).resolve().parent / "config"
CONFIG_NAME = "relate_local"
CHECKPOINT_SUBDIR = "checkpoints"
STEP_PREFIX = "global_step_"
COMPLETE_MARKER = "COMPLETE"  # written last inside the temporary folder, before the rename
TRAINER_STATE = "trainer_state.pt"
ACTOR_SUBDIR = "actor"
METRICS_CSV = "metrics.csv"
# Per-step generation seeds: seed * stride + step (training) or + offset + step (validation).
_SEED_STRIDE = 1_000_000
_VAL_SEED_OFFSET = 500_000


class NonFiniteError(FloatingPointError):
    """A reward, advantage or loss is NaN or infinite; the message names the record ids."""


# ---- settings and config ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalSettings:
    """The ``local:`` section (keys that only local mode has; comments in relate_local.yaml)."""

    output_dir: str
    max_steps: int
    checkpoint_every: int
    keep_checkpoints: int | None
    resume: bool
    val_every: int
    val_before_train: bool
    device: str
    dtype: str
    seed: int
    generation_batch_size: int
    share_prompt_prefix: bool
    export_final: bool
    tensorboard: bool
    progress: bool

    @classmethod
    def from_config(cls, section: Any) -> "LocalSettings":
        data = OmegaConf.to_container(section, resolve=True) if isinstance(section, DictConfig) else dict(section)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"local.{unknown[0]}: unknown key (known: {', '.join(sorted(known))})")
        settings = cls(**data)
        if settings.max_steps < 1 or settings.generation_batch_size < 1:
            raise ValueError("local.max_steps and local.generation_batch_size must be >= 1")
        if settings.keep_checkpoints is not None and settings.keep_checkpoints < 1:
            raise ValueError("local.keep_checkpoints must be >= 1 or null (keep all)")
        return settings


def compose_config(overrides: Sequence[str] = (), config_name: str = CONFIG_NAME) -> DictConfig:
    """The composed local config, as ``python -m recipe.relate.local_trainer [overrides]`` sees it.

    ``relate_local.yaml`` declares ``defaults: [relate_trainer, _self_]``. Hydra 1.3 refuses to
    load ``relate_trainer.yaml`` as a non-primary config because it sets ``hydra.searchpath``
    ("only supported from the primary config"), so that one defaults entry is applied here with
    Hydra's own machinery: ``relate_trainer`` is composed as the primary config (verl's
    ``ppo_trainer`` found through its searchpath), this file's keys are merged over it
    (``_self_`` last), then the overrides are applied with Hydra's override grammar
    (``key=value``, ``+key=value``, ``++key=value``, ``~key``).
    """
    from hydra import compose, initialize_config_dir
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import open_dict

    layer = OmegaConf.load(CONFIG_DIR / f"{config_name}.yaml")
    defaults = list(layer.pop("defaults", []))
    layer.pop("hydra", None)
    if len(defaults) != 2 or defaults[1] != "_self_" or not isinstance(defaults[0], str):
        raise ValueError(f"{config_name}.yaml: expected 'defaults: [<base config>, _self_]', got {defaults}")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        base = compose(config_name=defaults[0])
    with open_dict(base):
        config = OmegaConf.merge(base, layer)
    OmegaConf.set_struct(config, True)
    ConfigLoaderImpl._apply_overrides_to_config(OverridesParser.create().parse_overrides(list(overrides)), config)
    return config


def check_supported(config: DictConfig) -> None:
    """Raise on verl settings that change the algorithm and that local mode does not implement,
    rather than silently training something else than the verl run would."""
    algo, actor = config.algorithm, config.actor_rollout_ref.actor
    problems = []
    if algo.adv_estimator != "relate":
        problems.append(f"algorithm.adv_estimator={algo.adv_estimator!r} (local mode trains RELATE: 'relate')")
    if algo.get("use_kl_in_reward", False):
        problems.append("algorithm.use_kl_in_reward=true (use actor.use_kl_loss, the paper's eq. 6)")
    rc = algo.get("rollout_correction") or {}
    if rc.get("rollout_is") or rc.get("rollout_rs") or rc.get("bypass_mode"):
        problems.append("algorithm.rollout_correction (HF generate and the trainer share one model: no mismatch to correct)")
    if (algo.get("filter_groups") or {}).get("enable", False):
        problems.append("algorithm.filter_groups.enable=true")
    if config.data.get("custom_cls", {}).get("path"):
        problems.append("data.custom_cls")
    if int(config.data.train_batch_size) % int(actor.ppo_mini_batch_size) != 0:
        problems.append(f"data.train_batch_size={config.data.train_batch_size} is not a multiple of "
                        f"actor.ppo_mini_batch_size={actor.ppo_mini_batch_size} (prompts)")
    if float(config.actor_rollout_ref.rollout.temperature) <= 0:
        problems.append("actor_rollout_ref.rollout.temperature must be > 0 for training (log-probs divide by it)")
    grad_clip, clip_grad = actor.get("grad_clip"), actor.optim.get("clip_grad")
    if grad_clip is not None and clip_grad is not None and float(grad_clip) != float(clip_grad):
        problems.append(
            f"actor.grad_clip={grad_clip} differs from actor.optim.clip_grad={clip_grad}: verl 0.9.1's engine clips "
            "with optim.clip_grad and ignores actor.grad_clip; set both to the same value"
        )
    if config.local.get("share_prompt_prefix", False) and config.actor_rollout_ref.model.get(
            "enable_gradient_checkpointing", False):
        problems.append("local.share_prompt_prefix=true with actor_rollout_ref.model.enable_gradient_checkpointing="
                        "true (checkpointed training keeps no key/value cache to share; set one of them false)")
    if problems:
        raise ValueError("not supported in local mode: " + "; ".join(problems))


# ---- data ----------------------------------------------------------------------------------------------


@dataclass
class PromptRow:
    """One RL parquet row: its record (reward_model.ground_truth) and rendered prompt ids."""

    record: Any  # relate_common.records.AdRecord
    messages: list[dict]
    prompt_ids: list[int]

    @property
    def id(self) -> str:
        return self.record.id


def read_rl_rows(files: Any, prompt_key: str, max_samples: int = -1, shuffle: bool = False,
                 seed: int | None = None) -> list[tuple[Any, list[dict]]]:
    """(record, chat messages) of each row of verl RL parquet file(s) written by data_prep.

    ``max_samples`` > 0 keeps that many rows as verl's RLHFDataset does: a seeded random choice
    when ``shuffle``, else the first rows.
    """
    import pandas as pd

    from recipe.relate.scoring import record_from_ground_truth

    paths = [files] if isinstance(files, str) else list(files)
    frame = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    if max_samples is not None and 0 < max_samples < len(frame):
        if shuffle:
            rng = np.random.default_rng(*((seed,) if seed is not None else ()))
            frame = frame.iloc[rng.choice(len(frame), size=max_samples, replace=False)].reset_index(drop=True)
        else:
            frame = frame.iloc[:max_samples]
    rows = []
    for i, row in enumerate(frame.itertuples(index=False)):
        row = row._asdict()
        if prompt_key not in row:
            raise KeyError(f"{paths}: no column {prompt_key!r} (data.prompt_key)")
        reward_model = row.get("reward_model")
        truth = reward_model.get("ground_truth") if hasattr(reward_model, "get") else None
        record = record_from_ground_truth(truth, index=i)
        rows.append((record, [dict(m) for m in row[prompt_key]]))
    return rows


def fit_prompts(rows: list[tuple[Any, list[dict]]], prompt_ids: list[list[int]], max_length: int,
                filter_overlong: bool, truncation: str) -> tuple[list[PromptRow], int]:
    """Apply data.max_prompt_length with verl's options; returns (rows kept, rows dropped).

    filter_overlong_prompts drops longer prompts; otherwise ``truncation`` is ``error`` (raise,
    naming the record), ``left``, ``right`` or ``middle`` (cut tokens there).
    """
    out, dropped = [], 0
    for (record, messages), ids in zip(rows, prompt_ids):
        if len(ids) > max_length:
            if filter_overlong:
                dropped += 1
                continue
            if truncation == "error":
                raise ValueError(f"prompt of record {record.id} has {len(ids)} tokens > data.max_prompt_length="
                                 f"{max_length} (set data.filter_overlong_prompts=true or data.truncation)")
            if truncation == "left":
                ids = ids[-max_length:]
            elif truncation == "right":
                ids = ids[:max_length]
            elif truncation == "middle":
                head = max_length // 2
                ids = ids[:head] + ids[len(ids) - (max_length - head):]
            else:
                raise ValueError(f"data.truncation must be error, left, right or middle, got {truncation!r}")
        out.append(PromptRow(record=record, messages=messages, prompt_ids=list(ids)))
    return out, dropped


class PromptSampler:
    """Batches of prompt indices, epoch after epoch, with a state that resumes exactly.

    Like verl's train dataloader: a seeded random permutation per epoch when ``shuffle`` (else
    the file order) and ``drop_last`` (an incomplete final batch of an epoch is skipped).
    """

    def __init__(self, size: int, batch_size: int, shuffle: bool, seed: int):
        if size < batch_size:
            raise ValueError(f"{size} training prompts < data.train_batch_size={batch_size}")
        self.size, self.batch_size, self.shuffle, self.seed = size, batch_size, shuffle, seed
        self.epoch, self.offset = 0, 0

    def _order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.size, generator=generator).tolist()

    def next_batch(self) -> list[int]:
        """The next ``batch_size`` indices (moving to the next epoch when this one is used up)."""
        if self.offset + self.batch_size > self.size:
            self.epoch, self.offset = self.epoch + 1, 0
        batch = self._order(self.epoch)[self.offset:self.offset + self.batch_size]
        self.offset += self.batch_size
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "offset": self.offset, "size": self.size, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if (state["size"], state["batch_size"]) != (self.size, self.batch_size):
            raise ValueError(f"checkpoint sampler was for {state['size']} prompts in batches of {state['batch_size']}, "
                             f"this run has {self.size} in batches of {self.batch_size}")
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])


# ---- tensors of one rollout batch ------------------------------------------------------------------


@dataclass
class Packed:
    """A micro-batch in verl's layout: [left padding | prompt | response | right padding]."""

    input_ids: torch.Tensor  # (b, P + R)
    attention_mask: torch.Tensor  # (b, P + R)
    position_ids: torch.Tensor  # (b, P + R)
    responses: torch.Tensor  # (b, R)
    response_mask: torch.Tensor  # (b, R) float32


def pack_sequences(prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]], pad_id: int,
                   device: Any = "cpu") -> Packed:
    """Left-pad prompts to the longest P, right-pad responses to the longest R (>= 1)."""
    B = len(prompt_ids)
    P = max(len(p) for p in prompt_ids)
    R = max(1, max(len(r) for r in response_ids))
    input_ids = torch.full((B, P + R), pad_id, dtype=torch.long)
    attention = torch.zeros((B, P + R), dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        input_ids[i, P - len(p):P] = torch.as_tensor(list(p), dtype=torch.long)
        attention[i, P - len(p):P] = 1
        if len(r):
            input_ids[i, P:P + len(r)] = torch.as_tensor(list(r), dtype=torch.long)
            attention[i, P:P + len(r)] = 1
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
    return Packed(input_ids.to(device), attention.to(device), position_ids.to(device), input_ids[:, P:].to(device),
                  attention[:, P:].to(device=device, dtype=torch.float32))


@dataclass
class SharedPacked:
    """A micro-batch whose responses share prompts: each distinct prompt once, left-padded, and
    the responses right-padded behind a gather index into those prompts."""

    prompt_ids: torch.Tensor  # (u, P) distinct prompts, left-padded
    prompt_mask: torch.Tensor  # (u, P)
    prompt_positions: torch.Tensor  # (u, P)
    prompt_index: torch.Tensor  # (b,) row of prompt_ids each response continues
    responses: torch.Tensor  # (b, R)
    response_mask: torch.Tensor  # (b, R) float32
    response_positions: torch.Tensor  # (b, R): len(prompt) + j


def pack_shared(prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]], pad_id: int,
                device: Any = "cpu") -> SharedPacked:
    """Like :func:`pack_sequences`, but equal prompts are stored once (GRPO's G responses per prompt)."""
    from verl_cpu.sampling import distinct_prompts

    ids, mask, positions, index = distinct_prompts(prompt_ids, pad_id, "cpu")
    R = max(1, max(len(r) for r in response_ids))
    responses = torch.full((len(response_ids), R), pad_id, dtype=torch.long)
    response_mask = torch.zeros((len(response_ids), R), dtype=torch.float32)
    for row, r in enumerate(response_ids):
        if len(r):
            responses[row, :len(r)] = torch.as_tensor(list(r), dtype=torch.long)
            response_mask[row, :len(r)] = 1.0
    response_positions = mask.sum(-1)[index][:, None] + torch.arange(R)[None, :]
    return SharedPacked(ids.to(device), mask.to(device), positions.to(device), index.to(device), responses.to(device),
                        response_mask.to(device), response_positions.to(device))


def response_log_probs(model: Any, packed: Packed | SharedPacked, temperature: float,
                       with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob (and entropy) of every response token of ``packed``: (b, R) each.

    The last token's logits are never needed, so the model sees ``input_ids[:, :-1]`` and keeps
    the logits of its last R positions only (memory: b * R * vocab, not b * (P + R) * vocab).
    A :class:`SharedPacked` batch runs each distinct prompt once and gathers its keys and values
    for every response that continues it: the same function of the weights (the gather's backward
    sums the copies' gradients, which is the gradient of running the prompt once per response), at
    about (u*P + b*R) / (b*(P + R)) of the work; 0.4 for local mode's 4 responses per prompt.
    """
    from recipe.relate.local_loss import token_log_probs

    R = packed.responses.shape[1]
    if isinstance(packed, Packed):
        out = model(input_ids=packed.input_ids[:, :-1], attention_mask=packed.attention_mask[:, :-1],
                    position_ids=packed.position_ids[:, :-1], logits_to_keep=R, use_cache=False)
        return token_log_probs(out.logits, packed.responses, temperature, with_entropy=with_entropy)
    prefix = model(input_ids=packed.prompt_ids, attention_mask=packed.prompt_mask,
                   position_ids=packed.prompt_positions, logits_to_keep=1, use_cache=True)
    logits = prefix.logits[packed.prompt_index]  # (b, 1, vocab): predicts response token 0
    if R > 1:
        cache = prefix.past_key_values
        if cache is None:
            raise RuntimeError("the model returned no key/value cache (gradient checkpointing on?); "
                               "set local.share_prompt_prefix=false")
        cache.batch_select_indices(packed.prompt_index)
        rest = model(input_ids=packed.responses[:, :-1],
                     attention_mask=torch.cat([packed.prompt_mask[packed.prompt_index],
                                               packed.response_mask[:, :-1].to(packed.prompt_mask.dtype)], dim=1),
                     position_ids=packed.response_positions[:, :-1], past_key_values=cache, use_cache=True)
        logits = torch.cat([logits, rest.logits], dim=1)
    return token_log_probs(logits, packed.responses, temperature, with_entropy=with_entropy)


def chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    """Consecutive pieces of ``items`` of at most ``size`` elements."""
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def pad_right(rows: Sequence[torch.Tensor], width: int) -> torch.Tensor:
    """Stack (r_i,)-shaped or (1, r_i) rows into (len(rows), width), zero-padded on the right."""
    out = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, row in enumerate(rows):
        row = row.reshape(-1)
        out[i, :row.numel()] = row.float().cpu()
    return out


# ---- rewards and advantages ----------------------------------------------------------------------------


def check_finite(values: np.ndarray, ids: Sequence[str], what: str, step: int) -> None:
    """Raise :class:`NonFiniteError` naming every record id whose row of ``values`` is not finite.

    values: (B,) or (B, R) (rows are responses; masked positions must already be zero).
    """
    flat = np.asarray(values, dtype=np.float64).reshape(len(ids), -1)
    bad = [i for i in range(len(ids)) if not np.all(np.isfinite(flat[i]))]
    if bad:
        where = ", ".join(f"record {ids[i]} (response {i})" for i in bad[:10])
        raise NonFiniteError(f"step {step}: non-finite {what} for {where}" + (" ..." if len(bad) > 10 else ""))


def relate_advantages(token_credit_result: Any, sentence_reward: np.ndarray, response_lengths: Sequence[int],
                      uids: Sequence[str], width: int, alpha: float, sentence_estimator: str,
                      algorithm: Any) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Eq. 7-9 exactly as ``RelateTrainer._compute_advantage`` feeds verl: (scores, advantages, token share).

    r_i sits on each response's last token (verl's ``rm_scores``); for Models 3-4 the batch's
    sentence-level diversity is added there with the trainer's own ``add_at_last_token``; the
    token penalty r_token (``credit.token_penalty``) goes to ``relate_advantage`` through the
    trainer's hand-over, which also reports the token share.

    sentence_reward: (B,); response_lengths: B ints >= 1; uids: (B,) group id per response.
    Returns scores (B, width), advantages (B, width), token share.
    """
    from recipe.relate.relate_core_algos import pending_token_penalty, relate_advantage
    from recipe.relate.relate_trainer import add_at_last_token

    B = len(uids)
    lengths = torch.as_tensor(list(response_lengths), dtype=torch.long)
    if B == 0 or int(lengths.min()) < 1:
        raise ValueError("every response needs at least one token (generation returns the stop token)")
    mask = (torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)).float()
    scores = add_at_last_token(torch.zeros((B, width), dtype=torch.float32), lengths,
                               np.asarray(sentence_reward, dtype=np.float32))
    if np.any(token_credit_result.sentence_diversity != 0):  # Models 3-4: eq. 4 joins the sentence reward
        scores = add_at_last_token(scores, lengths, token_credit_result.sentence_diversity)
    penalty = torch.zeros((B, width), dtype=torch.float32)
    w = min(width, token_credit_result.token_penalty.shape[1])
    penalty[:, :w] = torch.from_numpy(np.ascontiguousarray(token_credit_result.token_penalty[:, :w], dtype=np.float32))
    with pending_token_penalty(penalty, alpha, sentence_estimator) as handover:
        advantages, _ = relate_advantage(token_level_rewards=scores, response_mask=mask,
                                         index=np.array(list(uids), dtype=object), config=algorithm)
    return scores, advantages, float(handover.token_share or 0.0)


def extra_means(extras: Sequence[dict[str, float]]) -> dict[str, float]:
    """Batch mean of every non-component value the scorer returned (``compliant``,
    ``judge_failed``, ``predicted_ctcvr``), over the responses where it is finite."""
    out = {}
    for key in sorted({k for e in extras for k in e if not k.startswith("reward_")}):
        values = [float(e[key]) for e in extras if key in e and e[key] is not None and math.isfinite(float(e[key]))]
        if values:
            out[f"relate/{key}/mean"] = float(np.mean(values))
    return out


# ---- metrics output ------------------------------------------------------------------------------------


class MetricsLog:
    """Per-step metrics to ``metrics.csv`` (rewritten atomically each step) and TensorBoard.

    On resume from step k, CSV rows after k (written by the interrupted run after its last
    checkpoint) are dropped and TensorBoard purges its events after k (k = 0: a fresh run).
    """

    def __init__(self, output_dir: Path, start_step: int, tensorboard: bool):
        self.path = output_dir / METRICS_CSV
        self.rows: list[dict[str, float]] = []
        if start_step > 0 and self.path.exists():
            with self.path.open(newline="", encoding="utf-8") as f:
                for row in csv.DictReader(f):
                    if int(float(row["step"])) <= start_step:
                        self.rows.append({k: float(v) for k, v in row.items() if v not in ("", None)})
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: TensorBoard hides events at later steps from an earlier (interrupted) run.
            self.writer = SummaryWriter(log_dir=str(output_dir / "tensorboard"), purge_step=start_step + 1)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": float(step), **{k: float(v) for k, v in metrics.items()}}
        self.rows = [r for r in self.rows if int(r["step"]) != step] + [row]
        columns = ["step"] + sorted({k for r in self.rows for k in r} - {"step"})
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            for r in self.rows:
                writer.writerow({k: (repr(v) if k in r else "") for k, v in ((c, r.get(c)) for c in columns)})
        os.replace(tmp, self.path)
        if self.writer is not None:
            for key, value in metrics.items():
                if math.isfinite(float(value)):
                    self.writer.add_scalar(key, float(value), step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics_csv(path: str | Path) -> list[dict[str, float]]:
    """The rows of a ``metrics.csv`` as floats (missing cells left out)."""
    with Path(path).open(newline="", encoding="utf-8") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


# ---- checkpoints ------------------------------------------------------------------------------------


def checkpoint_dirs(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``output_dir/checkpoints`` as (step, path), oldest first.

    Complete = named ``global_step_<k>`` and holding the marker file written last; temporary
    folders of an interrupted save (``.tmp-...``) never match.
    """
    root = Path(output_dir) / CHECKPOINT_SUBDIR
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        m = re.fullmatch(rf"{STEP_PREFIX}(\d+)", path.name)
        if m and path.is_dir() and (path / COMPLETE_MARKER).is_file():
            found.append((int(m.group(1)), path))
    return sorted(found)


def latest_checkpoint(output_dir: str | Path) -> tuple[int, Path] | None:
    """The newest complete checkpoint, or None."""
    found = checkpoint_dirs(output_dir)
    return found[-1] if found else None


def write_atomically(final: Path, write: Callable[[Path], None], marker: str | None = COMPLETE_MARKER) -> Path:
    """Call ``write(tmp_dir)``, add ``marker``, then rename the folder to ``final`` (replacing it).

    A crash or Ctrl-C at any point leaves either the old ``final`` or a ``.tmp-`` folder that
    :func:`checkpoint_dirs` ignores (and the next save cleans up).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        write(tmp)
        if marker:
            (tmp / marker).write_text("ok\n", encoding="utf-8")
        if final.exists():
            old = final.parent / f".tmp-old-{final.name}-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def rng_state() -> dict[str, Any]:
    """RNG states of python, numpy, torch (and CUDA when present)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---- the trainer -------------------------------------------------------------------------------------


class LocalTrainer:
    """One-process RELATE trainer; build with the composed config, then :meth:`fit`."""

    def __init__(self, config: DictConfig):
        from recipe.relate.local_loss import actor_config
        from recipe.relate.local_rollout import default_device, padding_id, resolve_dtype

        check_supported(config)
        self.config = config
        self.local = LocalSettings.from_config(config.local)
        self.recipe_config, self.reward_config = split_relate_section(config.relate)
        self.data_cfg, self.algorithm = config.data, config.algorithm
        self.arr = config.actor_rollout_ref
        self.rollout_cfg = self.arr.rollout
        self.n = int(self.rollout_cfg.n)
        self.actor_cfg = actor_config(self.arr.actor, rollout_n=self.n)
        self.actor_cfg.validate(n_gpus=1, train_batch_size=int(self.data_cfg.train_batch_size))
        self.temperature = float(self.rollout_cfg.temperature)
        self.output_dir = Path(self.local.output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.device = default_device() if self.local.device == "auto" else self.local.device
        self.compute_dtype = resolve_dtype(self.local.dtype, self.device)
        seed_everything(self.local.seed)

        self.model_path = self._model_path()
        self.lora_rank = int(self.arr.model.get("lora_rank", 0) or 0)
        self.model, self.tokenizer = self._build_policy()
        self.pad_id = padding_id(self.model, self.tokenizer)
        self.ref_model = self._build_reference()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer, self.lr_scheduler = self._build_optimizer()

        data_seed = self.data_cfg.get("seed")
        self.data_seed = int(data_seed) if data_seed is not None else self.local.seed  # verl: unseeded when null
        self.train_rows = self._load_rows(self.data_cfg.train_files, int(self.data_cfg.get("train_max_samples", -1)),
                                          "train")
        self.val_rows = (self._load_rows(self.data_cfg.val_files, int(self.data_cfg.get("val_max_samples", -1)), "val")
                         if self.data_cfg.get("val_files") and self.local.val_every > 0 else [])
        self.sampler = PromptSampler(len(self.train_rows), int(self.data_cfg.train_batch_size),
                                     bool(self.data_cfg.get("shuffle", True)), self.data_seed)
        from recipe.relate.scoring import SentenceScorer

        self.scorer = SentenceScorer(self.recipe_config, self.reward_config, self.tokenizer)
        self.step = 0
        self.resumed_from: Path | None = None
        if self.local.resume:
            latest = latest_checkpoint(self.output_dir)
            if latest is not None:
                self.load_checkpoint(latest[1])
        (self.output_dir / "config.yaml").write_text(OmegaConf.to_yaml(config, resolve=True), encoding="utf-8")

    # ---- building ------------------------------------------------------------------------------
    def _model_path(self) -> str:
        path = self.arr.model.get("path")
        if path in (None, "", "smollm2"):
            from relate_common.assets import smollm2_model_dir

            return str(smollm2_model_dir())
        return str(path)

    def _load_base(self, path: str) -> tuple[Any, Any]:
        from recipe.relate.local_rollout import load_policy

        # Master weights stay float32; local.dtype is the compute dtype (autocast), as verl's
        # FSDP mixed precision keeps fp32 parameters and computes in bf16.
        model, tokenizer = load_policy(path, dtype="float32", device=self.device)
        tokenizer_path = self.arr.model.get("tokenizer_path")
        if tokenizer_path:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
            tokenizer.padding_side = "left"
        return model, tokenizer

    def _lora_config(self) -> Any:
        from peft import LoraConfig

        model_cfg = self.arr.model
        targets = model_cfg.get("target_modules", "all-linear")
        targets = targets if isinstance(targets, str) else list(targets)
        exclude = model_cfg.get("exclude_modules")
        return LoraConfig(r=self.lora_rank, lora_alpha=int(model_cfg.get("lora_alpha", 16)), target_modules=targets,
                          exclude_modules=list(exclude) if exclude else None, bias="none", task_type="CAUSAL_LM")

    def _build_policy(self, checkpoint_actor: Path | None = None) -> tuple[Any, Any]:
        """Policy model (full or LoRA) from the base path, or from a checkpoint's actor folder."""
        if self.lora_rank > 0:
            from peft import PeftModel, get_peft_model

            base, tokenizer = self._load_base(self.model_path)
            if checkpoint_actor is not None:
                model = PeftModel.from_pretrained(base, str(checkpoint_actor), is_trainable=True)
            else:
                model = get_peft_model(base, self._lora_config())
        else:
            # A checkpoint's actor folder holds the full weights and the tokenizer.
            model, tokenizer = self._load_base(str(checkpoint_actor) if checkpoint_actor else self.model_path)
        if self.arr.model.get("enable_gradient_checkpointing", False):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if self.lora_rank > 0:
                model.enable_input_require_grads()
        model.eval()
        return model, tokenizer

    def _build_reference(self) -> Any | None:
        """The KL reference: the base weights. With LoRA it is the policy with adapters disabled
        (as verl's ref_in_actor); otherwise a frozen copy of the initial model."""
        if not self.actor_cfg.use_kl_loss or self.lora_rank > 0:
            return None
        ref, _ = self._load_base(self.model_path)
        ref.requires_grad_(False)
        return ref.eval()

    def _build_optimizer(self) -> tuple[Any, Any]:
        """verl's optimizer and LR schedule from ``actor.optim`` (the schedule steps once per
        training step, as verl's ``update_lr_scheduler``); total steps = local.max_steps."""
        from verl.utils.config import omega_conf_to_dataclass
        from verl.utils.torch_functional import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup
        from verl.workers.config.optimizer import build_optimizer

        optim = omega_conf_to_dataclass(self.arr.actor.optim)
        optim.total_training_steps = self.local.max_steps
        self.optim_cfg = optim
        optimizer = build_optimizer(self.params, optim)
        warmup = optim.lr_warmup_steps
        if warmup <= 0:
            warmup = int(optim.lr_warmup_steps_ratio * optim.total_training_steps)
        if optim.lr_scheduler_type == "constant":
            scheduler = get_constant_schedule_with_warmup(optimizer=optimizer, num_warmup_steps=warmup)
        else:
            scheduler = get_cosine_schedule_with_warmup(optimizer=optimizer, num_warmup_steps=warmup,
                                                        num_training_steps=optim.total_training_steps,
                                                        min_lr_ratio=optim.min_lr_ratio, num_cycles=optim.num_cycles,
                                                        zero_indexed_step=optim.zero_indexed_step)
        return optimizer, scheduler

    def _load_rows(self, files: Any, max_samples: int, split: str) -> list[PromptRow]:
        from recipe.relate.local_rollout import render_prompts

        raw = read_rl_rows(files, self.data_cfg.get("prompt_key", "prompt"), max_samples,
                           shuffle=bool(self.data_cfg.get("shuffle", True)), seed=self.data_seed)
        kwargs = self.data_cfg.get("apply_chat_template_kwargs") or {}
        ids = render_prompts(self.tokenizer, [m for _, m in raw],
                             OmegaConf.to_container(kwargs) if isinstance(kwargs, DictConfig) else dict(kwargs))
        rows, dropped = fit_prompts(raw, ids, int(self.data_cfg.max_prompt_length),
                                    bool(self.data_cfg.get("filter_overlong_prompts", True)),
                                    str(self.data_cfg.get("truncation", "error")))
        if dropped:
            print(f"[local] {split}: dropped {dropped} prompts longer than data.max_prompt_length="
                  f"{self.data_cfg.max_prompt_length}")
        if not rows:
            raise ValueError(f"no {split} prompts left in {files}")
        return rows

    # ---- model passes ------------------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        if self.compute_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=torch.device(self.device).type, dtype=self.compute_dtype)

    def generate(self, rows: Sequence[PromptRow], n: int, temperature: float, top_p: float, seed: int) -> list[list[list[int]]]:
        """``n`` responses per row: [row][sample] -> token ids (local_rollout contract)."""
        from recipe.relate import local_rollout

        self.model.eval()
        with self.autocast():
            return local_rollout.generate_responses(
                self.model, self.tokenizer, [r.prompt_ids for r in rows], n, temperature=temperature, top_p=top_p,
                max_new_tokens=int(self.data_cfg.max_response_length), seed=seed,
                batch_size=self.local.generation_batch_size, share_prompt_prefix=self.local.share_prompt_prefix)

    def pack(self, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]]) -> Packed | SharedPacked:
        """One micro-batch in the layout ``local.share_prompt_prefix`` selects."""
        if self.local.share_prompt_prefix:
            return pack_shared(prompts, responses, self.pad_id, self.device)
        return pack_sequences(prompts, responses, self.pad_id, self.device)

    @torch.no_grad()
    def log_probs(self, model: Any, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
                  micro_batch_size: int, width: int, with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probs (and entropies) of all responses without grad: (B, width) each."""
        model.eval()
        lps, ents = [], []
        for idx in chunks(range(len(prompts)), micro_batch_size):
            packed = self.pack([prompts[i] for i in idx], [responses[i] for i in idx])
            with self.autocast():
                lp, ent = response_log_probs(model, packed, self.temperature, with_entropy=with_entropy)
            lps.extend(lp.float().cpu())
            if ent is not None:
                ents.extend(ent.float().cpu())
        return pad_right(lps, width), (pad_right(ents, width) if with_entropy else None)

    def old_log_probs(self, prompts, responses, width) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs of the rollout policy (and its entropy, for the metric)."""
        mbs = self.rollout_cfg.get("log_prob_micro_batch_size_per_gpu") or len(prompts)
        return self.log_probs(self.model, prompts, responses, int(mbs), width, with_entropy=True)

    def ref_log_probs(self, prompts, responses, width) -> torch.Tensor:
        """Log-probs of the reference policy (base weights)."""
        mbs = int(self.arr.ref.get("log_prob_micro_batch_size_per_gpu") or len(prompts))
        if self.ref_model is not None:
            return self.log_probs(self.ref_model, prompts, responses, mbs, width)[0]
        with self.model.disable_adapter():
            return self.log_probs(self.model, prompts, responses, mbs, width)[0]

    # ---- one training step ------------------------------------------------------------------------------
    def rollout_seed(self, step: int, validation: bool = False) -> int:
        return self.local.seed * _SEED_STRIDE + (_VAL_SEED_OFFSET if validation else 0) + step

    def score(self, records: Sequence[Any], responses: Sequence[Sequence[int]], uids: Sequence[str],
              width: int) -> tuple[np.ndarray, list[dict[str, float]], Any]:
        """Sentence rewards (the reward manager's path) and batch credit of B responses."""
        from recipe.relate.scoring import token_credit

        scored = self.scorer.score_many(list(records), [list(r) for r in responses])
        rewards = np.array([s for s, _ in scored], dtype=np.float64)
        lengths = np.array([len(r) for r in responses])
        mask = np.arange(width)[None, :] < lengths[:, None]
        credit = token_credit(self.tokenizer, [list(r) for r in responses], list(uids), list(records),
                              self.reward_config, response_mask=mask)
        return rewards, [e for _, e in scored], credit

    def train_step(self, step: int) -> dict[str, float]:
        """Rollout, rewards, advantages and the PPO update of ``step``; returns its metrics."""
        from recipe.relate.relate_trainer import RelateTrainer

        timing: dict[str, float] = {}
        t_step = t = time.perf_counter()
        rows = [self.train_rows[i] for i in self.sampler.next_batch()]
        generated = self.generate(rows, self.n, self.temperature, float(self.rollout_cfg.top_p), self.rollout_seed(step))
        prompts = [r.prompt_ids for r in rows for _ in range(self.n)]
        responses = [resp for group in generated for resp in group]
        records = [r.record for r in rows for _ in range(self.n)]
        ids = [r.id for r in records]
        uids = [f"{step}:{k}" for k, _ in enumerate(rows) for _ in range(self.n)]
        lengths = [len(r) for r in responses]
        width = max(1, max(lengths))
        timing["gen"] = time.perf_counter() - t

        t = time.perf_counter()
        rewards, extras, credit = self.score(records, responses, uids, width)
        check_finite(rewards, ids, "sentence reward", step)
        timing["reward"] = time.perf_counter() - t

        t = time.perf_counter()
        scores, advantages, token_share = relate_advantages(
            credit, rewards, lengths, uids, width, self.reward_config.credit.alpha,
            self.recipe_config.sentence_estimator, self.algorithm)
        mask = (torch.arange(width)[None, :] < torch.as_tensor(lengths)[:, None]).float()
        check_finite(scores.numpy(), ids, "reward (with batch diversity)", step)
        check_finite((advantages * mask).numpy(), ids, "advantage", step)
        timing["adv"] = time.perf_counter() - t

        t = time.perf_counter()
        old_log_prob, entropy = self.old_log_probs(prompts, responses, width)
        timing["old_log_prob"] = time.perf_counter() - t
        ref_log_prob = None
        if self.actor_cfg.use_kl_loss:
            t = time.perf_counter()
            ref_log_prob = self.ref_log_probs(prompts, responses, width)
            timing["ref"] = time.perf_counter() - t

        t = time.perf_counter()
        actor_metrics = self.update_policy(step, prompts, responses, ids, old_log_prob, ref_log_prob, advantages, mask)
        timing["update_actor"] = time.perf_counter() - t
        timing["step"] = time.perf_counter() - t_step

        metrics = self.data_metrics(prompts, responses, scores, advantages)
        metrics.update(RelateTrainer.relate_metrics(credit, token_share, [{"reward_extra_info": e} for e in extras]))
        metrics["relate/sentence_reward/mean"] = float(np.mean(rewards))
        metrics.update(extra_means(extras))
        metrics["actor/entropy"] = float((entropy * mask).sum() / mask.sum().clamp(min=1))
        metrics.update(actor_metrics)
        metrics.update({f"timing_s/{k}": v for k, v in timing.items()})
        metrics["training/global_step"] = float(step)
        metrics["training/epoch"] = float(self.sampler.epoch)
        return metrics

    def update_policy(self, step: int, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
                      ids: Sequence[str], old_log_prob: torch.Tensor, ref_log_prob: torch.Tensor | None,
                      advantages: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
        """PPO epochs over mini-batches (verl's make_iterator) with micro-batch accumulation.

        All tensors (B, width). Mini-batch = actor.ppo_mini_batch_size prompts x n responses; each
        micro-batch loss is normalised by the mini-batch's token and sequence counts, so the
        accumulated gradient is the mini-batch's (verl's global_batch_info).
        """
        from recipe.relate.local_loss import actor_loss
        from tensordict import TensorDict
        from verl.utils.tensordict_utils import make_iterator

        cfg = self.actor_cfg
        B = len(prompts)
        mini = int(cfg.ppo_mini_batch_size) * self.n
        micro = int(cfg.ppo_micro_batch_size_per_gpu or cfg.ppo_micro_batch_size or mini)
        need_entropy = bool(cfg.entropy_coeff != 0 or cfg.get("calculate_entropy", False))
        index = TensorDict({"index": torch.arange(B)}, batch_size=[B])
        iterator = make_iterator(index, mini_batch_size=mini, epochs=int(cfg.ppo_epochs), seed=int(cfg.data_loader_seed),
                                 dataloader_kwargs={"shuffle": bool(cfg.shuffle)})
        sums: dict[str, list[float]] = {"actor/pg_loss": [], "actor/kl_loss": [], "actor/entropy_loss": [],
                                        "actor/grad_norm": [], "actor/loss": []}
        per_micro: dict[str, list[float]] = {}
        self.model.train()
        for mini_batch in iterator:
            idx = mini_batch["index"].tolist()
            n_tokens = int(mask[idx].sum())
            self.optimizer.zero_grad(set_to_none=True)
            totals = {"actor/pg_loss": 0.0, "actor/kl_loss": 0.0, "actor/entropy_loss": 0.0, "actor/loss": 0.0}
            if self.local.share_prompt_prefix:
                # Responses of one prompt in the same micro-batch share its prefix pass; the mini-batch
                # gradient does not depend on how it is cut into micro-batches.
                idx = sorted(idx, key=lambda i: i // self.n)
            for part in chunks(idx, micro):
                packed = self.pack([prompts[i] for i in part], [responses[i] for i in part])
                w = packed.responses.shape[1]
                with self.autocast():
                    log_prob, entropy = response_log_probs(self.model, packed, self.temperature, with_entropy=need_entropy)
                on_device = lambda x: x[part, :w].to(self.device)  # noqa: E731
                terms = actor_loss(log_prob.float(), on_device(old_log_prob), on_device(advantages),
                                   packed.response_mask, cfg,
                                   ref_log_prob=on_device(ref_log_prob) if ref_log_prob is not None else None,
                                   entropy=entropy, batch_num_tokens=n_tokens, global_batch_size=len(idx))
                if not torch.isfinite(terms.loss):
                    self._raise_loss(step, part, ids, log_prob, old_log_prob, ref_log_prob, advantages, packed)
                terms.loss.backward()
                totals["actor/pg_loss"] += terms.pg_loss
                totals["actor/kl_loss"] += terms.kl_loss or 0.0
                totals["actor/entropy_loss"] += terms.entropy_loss or 0.0
                totals["actor/loss"] += float(terms.loss.detach())
                for key, value in terms.pg_metrics.items():
                    per_micro.setdefault(key, []).append(value)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm=self.optim_cfg.clip_grad)
            if torch.isfinite(grad_norm):
                self.optimizer.step()
            else:  # verl's engine skips the update on a non-finite gradient norm
                print(f"[local] step {step}: non-finite grad norm {float(grad_norm)}; update skipped")
                self.optimizer.zero_grad(set_to_none=True)
            for key, value in totals.items():
                sums[key].append(value)
            sums["actor/grad_norm"].append(float(grad_norm))
        self.lr_scheduler.step()
        self.model.eval()
        out = {k: float(np.mean(v)) for k, v in sums.items() if v}
        if not cfg.use_kl_loss:
            out.pop("actor/kl_loss", None)
        if not need_entropy:
            out.pop("actor/entropy_loss", None)
        out.update({k: float(np.mean(v)) for k, v in per_micro.items()})
        out["actor/lr"] = float(self.lr_scheduler.get_last_lr()[0])
        if cfg.use_kl_loss:
            out["actor/kl_coef"] = float(cfg.kl_loss_coef)
        return out

    def _raise_loss(self, step, part, ids, log_prob, old_log_prob, ref_log_prob, advantages, packed) -> None:
        """Name the records of a micro-batch whose loss is not finite (rows with a non-finite input)."""
        w = packed.responses.shape[1]
        m = packed.response_mask.bool().cpu()
        suspects = []
        for j, i in enumerate(part):
            tensors = [log_prob.detach()[j].cpu(), old_log_prob[i, :w], advantages[i, :w]]
            if ref_log_prob is not None:
                tensors.append(ref_log_prob[i, :w])
            if any(not torch.isfinite(t[m[j]]).all() for t in tensors):
                suspects.append(i)
        named = suspects or list(part)
        where = ", ".join(f"record {ids[i]} (response {i})" for i in named)
        raise NonFiniteError(f"step {step}: non-finite actor loss; "
                             f"{'non-finite log-probs/advantages in' if suspects else 'micro-batch of'} {where}")

    def data_metrics(self, prompts, responses, scores, advantages) -> dict[str, float]:
        """verl's ``compute_data_metrics`` on this batch (responses padded to max_response_length,
        as in the verl run, so clip ratios mean the same)."""
        from verl.protocol import DataProto
        from verl.trainer.ppo.metric_utils import compute_data_metrics

        R = int(self.data_cfg.max_response_length)
        P = max(len(p) for p in prompts)
        B = len(prompts)
        attention = torch.zeros((B, P + R), dtype=torch.long)
        for i, (p, r) in enumerate(zip(prompts, responses)):
            attention[i, P - len(p):P] = 1
            attention[i, P:P + len(r)] = 1
        width = scores.shape[1]
        pad = lambda x: torch.nn.functional.pad(x, (0, R - width)) if R > width else x[:, :R]  # noqa: E731
        data = DataProto.from_dict(tensors={
            "prompts": torch.zeros((B, P), dtype=torch.long), "responses": torch.zeros((B, R), dtype=torch.long),
            "attention_mask": attention, "response_mask": attention[:, P:],
            "token_level_scores": pad(scores), "token_level_rewards": pad(scores),
            "advantages": pad(advantages), "returns": pad(advantages)})
        return {k: float(v) for k, v in compute_data_metrics(data, use_critic=False).items()}

    # ---- validation -------------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Generate on the val split with ``rollout.val_kwargs`` and score with the same reward path:
        mean sentence reward, every component, diversity and response length (``val/`` prefix)."""
        from recipe.relate.relate_trainer import component_means

        vk = self.rollout_cfg.val_kwargs
        greedy = not vk.get("do_sample", False) or float(vk.temperature) <= 0
        temperature = 0.0 if greedy else float(vk.temperature)
        n = int(vk.get("n", 1))
        generated = self.generate(self.val_rows, n, temperature, float(vk.top_p), self.rollout_seed(self.step, True))
        responses = [resp for group in generated for resp in group]
        records = [r.record for r in self.val_rows for _ in range(n)]
        uids = [f"val:{k}" for k, _ in enumerate(self.val_rows) for _ in range(n)]
        width = max(1, max(len(r) for r in responses))
        rewards, extras, credit = self.score(records, responses, uids, width)
        out = {"val/score/mean": float(np.mean(rewards)),
               "val/diversity_penalty/mean": float(np.mean(credit.diversity_penalty)),
               "val/penalised_tokens/blacklist": float(credit.blacklist_mask.sum(axis=1).mean()),
               "val/response_length/mean": float(np.mean([len(r) for r in responses])),
               **{"val/" + k.split("/", 1)[1]: v for k, v in extra_means(extras).items()}}
        for key, value in component_means([{"reward_extra_info": e} for e in extras]).items():
            out["val/reward/" + key.rsplit("/", 1)[-1]] = value
        return out

    # ---- checkpoints --------------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """``checkpoints/global_step_<k>``: actor (HF folder or PEFT adapter), optimizer, LR
        schedule, sampler position and RNG states, written atomically."""
        def write(tmp: Path) -> None:
            self.model.save_pretrained(tmp / ACTOR_SUBDIR)
            self.tokenizer.save_pretrained(tmp / ACTOR_SUBDIR)
            torch.save({"step": self.step, "optimizer": self.optimizer.state_dict(),
                        "lr_scheduler": self.lr_scheduler.state_dict(), "sampler": self.sampler.state_dict(),
                        "rng": rng_state(), "lora_rank": self.lora_rank, "model_path": self.model_path},
                       tmp / TRAINER_STATE)
            (tmp / "config.yaml").write_text(OmegaConf.to_yaml(self.config, resolve=True), encoding="utf-8")

        root = self.output_dir / CHECKPOINT_SUBDIR
        path = write_atomically(root / f"{STEP_PREFIX}{self.step}", write)
        (root / "latest_checkpointed_iteration.txt").write_text(str(self.step), encoding="utf-8")
        if self.local.keep_checkpoints is not None:
            for _, old in checkpoint_dirs(self.output_dir)[:-self.local.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        for stale in root.glob(".tmp-*"):  # left by an interrupted earlier save
            shutil.rmtree(stale, ignore_errors=True)
        return path

    def load_checkpoint(self, path: Path) -> None:
        """Restore everything :meth:`save_checkpoint` wrote; the next step continues exactly."""
        state = torch.load(path / TRAINER_STATE, map_location="cpu", weights_only=False)
        if int(state["lora_rank"]) != self.lora_rank:
            raise ValueError(f"checkpoint {path} has lora_rank={state['lora_rank']}, the config {self.lora_rank}")
        self.model, _ = self._build_policy(checkpoint_actor=path / ACTOR_SUBDIR)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer, self.lr_scheduler = self._build_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.resumed_from = path
        print(f"[local] resumed from {path} (step {self.step})")

    def export_final(self) -> Path:
        """``final/``: a plain Hugging Face model folder (LoRA merged into a copy), for generate/evaluate."""
        def write(tmp: Path) -> None:
            model = self.model
            if self.lora_rank > 0:
                model = copy.deepcopy(self.model).merge_and_unload()
            model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)

        return write_atomically(self.output_dir / "final", write, marker=None)

    # ---- the loop -----------------------------------------------------------------------------------------
    def fit(self) -> list[dict[str, float]]:
        """Train from ``self.step`` to ``local.max_steps``; returns the metrics of the steps run."""
        from tqdm.auto import tqdm

        log = MetricsLog(self.output_dir, self.step, self.local.tensorboard)
        history = []
        bar = tqdm(total=self.local.max_steps, initial=self.step, desc="relate-local", unit="step",
                   disable=not self.local.progress)
        try:
            if self.step == 0 and self.local.val_before_train and self.val_rows:
                log.log(0, self.validate())
            while self.step < self.local.max_steps:
                self.step += 1
                metrics = self.train_step(self.step)
                if self.val_rows and self.local.val_every > 0 and (
                        self.step % self.local.val_every == 0 or self.step == self.local.max_steps):
                    t = time.perf_counter()
                    metrics.update(self.validate())
                    metrics["timing_s/validate"] = time.perf_counter() - t
                log.log(self.step, metrics)
                history.append({"step": float(self.step), **metrics})
                if self.local.checkpoint_every > 0 and (
                        self.step % self.local.checkpoint_every == 0 or self.step == self.local.max_steps):
                    self.save_checkpoint()
                bar.update(1)
                bar.set_postfix(score=f"{metrics['critic/score/mean']:.3f}",
                                kl=f"{metrics.get('actor/kl_loss', 0.0):.4f}",
                                len=f"{metrics['response_length/mean']:.0f}",
                                s_step=f"{metrics['timing_s/step']:.1f}")
            if self.local.export_final:
                self.export_final()
        finally:
            bar.close()
            log.close()
        return history


def run(config: DictConfig) -> list[dict[str, float]]:
    """Build the trainer from a composed config and train; returns the per-step metrics."""
    return LocalTrainer(config).fit()


HELP = f"""usage: python -m recipe.relate.local_trainer [--cfg] [KEY=VALUE ...]

Train RELATE in one process (CPU or one GPU) from the RL parquet that data_prep/build_dataset.py
writes. Arguments are Hydra overrides of {CONFIG_DIR / CONFIG_NAME}.yaml, which is the verl
run's relate_trainer.yaml plus a `local:` section; every key keeps verl's meaning.

  --cfg        print the composed config and exit (nothing is loaded or trained)
  -h, --help   this message

Common overrides (defaults in the YAML):
  relate.preset=model1|model2|model3|model4|relate    reward preset (paper Table 2)
  relate.ctcvr_model_dir=DIR                          CTCVR scorer (ctcvr_model.train); needed by model2+
  data.train_files=PATH data.val_files=PATH           RL parquet (default: data/relate/{{train,val}}.parquet)
  data.train_batch_size=4 actor_rollout_ref.rollout.n=4   prompts per step x responses per prompt (G)
  actor_rollout_ref.model.path=DIR                    Hugging Face causal LM (null: SmolLM2-135M-Instruct)
  actor_rollout_ref.model.lora_rank=8                 train a LoRA adapter instead of all weights
  actor_rollout_ref.actor.optim.lr=1e-5               learning rate
  local.max_steps=30 local.checkpoint_every=10 local.val_every=10 local.output_dir=DIR

Outputs in local.output_dir: metrics.csv, tensorboard/, checkpoints/global_step_K/ (a rerun resumes
from the newest complete one), final/ (Hugging Face folder for recipe.relate.generate), config.yaml.
"""


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: Hydra overrides as arguments; ``--cfg`` prints the composed config and exits."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if {"-h", "--help"} & set(args):
        print(HELP)
        return
    show = "--cfg" in args
    config = compose_config([a for a in args if a != "--cfg"])
    if show:
        print(OmegaConf.to_yaml(config, resolve=True))
        return
    history = run(config)
    if history:
        last = history[-1]
        print(f"[local] step {int(last['step'])}: score {last['critic/score/mean']:.4f}, "
              f"{last['timing_s/step']:.1f} s/step; outputs in {config.local.output_dir}")


if __name__ == "__main__":
    main()
