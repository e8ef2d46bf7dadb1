"""Corpus pre-training of the testbed: next-token loss on the ad tokens of (prompt, ad) pairs.

This is not an RL loop and not a second trainer of the product: it turns the random testbed Llama
into a model that writes the ad format with variety between samples, so that verl's SFT trainer (the
cold start) and verl's RL loop have something to work on (it does not learn to copy the prompt's
facts at this size: testbed/README.md). Plain PyTorch, one process, seeded.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from testbed.config import PretrainConfig
from testbed.corpus import CorpusPair


@dataclass(frozen=True)
class EncodedPair:
    """Token ids of one pair: the rendered prompt (generation prompt included) and the ad + end of turn."""

    prompt_ids: list[int]
    response_ids: list[int]


def encode_pairs(pairs: Sequence[CorpusPair], tokenizer: Any, max_length: int) -> tuple[list[EncodedPair], int]:
    """Tokenise every pair as the chat template renders it; return those of at most ``max_length``
    tokens and how many were longer (dropped)."""
    prompts = tokenizer.apply_chat_template([list(p.messages) for p in pairs], add_generation_prompt=True,
                                            tokenize=False)
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer([p.ad + tokenizer.eos_token for p in pairs], add_special_tokens=False)["input_ids"]
    kept = [EncodedPair(p, r) for p, r in zip(prompt_ids, response_ids) if len(p) + len(r) <= max_length]
    return kept, len(pairs) - len(kept)


def collate(batch: Sequence[EncodedPair], pad_id: int) -> dict[str, Any]:
    """Right-padded ``input_ids`` / ``attention_mask`` and ``labels`` (-100 on prompt and padding), (B, T)."""
    import torch

    width = max(len(e.prompt_ids) + len(e.response_ids) for e in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, e in enumerate(batch):
        ids = e.prompt_ids + e.response_ids
        input_ids[row, :len(ids)] = torch.tensor(ids)
        attention_mask[row, :len(ids)] = 1
        labels[row, len(e.prompt_ids):len(ids)] = torch.tensor(e.response_ids)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def lr_at(step: int, config: PretrainConfig) -> float:
    """Linear warm-up to ``config.lr`` over ``warmup_steps``, then cosine decay to 10% of it at ``steps``."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * (0.1 + 0.45 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def batches(n_items: int, batch_size: int, seed: int) -> Any:
    """Endless index batches: each epoch a new seeded permutation, cut into ``batch_size`` pieces."""
    rng = random.Random(seed)
    while True:
        order = list(range(n_items))
        rng.shuffle(order)
        for start in range(0, n_items - batch_size + 1, batch_size):
            yield order[start:start + batch_size]


def pretrain(model: Any, encoded: Sequence[EncodedPair], pad_id: int, config: PretrainConfig, seed: int,
             log: Callable[[dict[str, float]], None] | None = None) -> list[dict[str, float]]:
    """Train ``model`` in place for ``config.steps`` steps on ``encoded``; return one metrics row per step
    (``step``, ``loss``: mean token loss of the ad tokens, ``lr``, ``seconds``)."""
    import torch

    if len(encoded) < config.batch_size:
        raise ValueError(f"the corpus has {len(encoded)} pairs, fewer than one batch of {config.batch_size}")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(seed)
    model.train()
    decay = [p for p in model.parameters() if p.dim() >= 2]  # matrices and embeddings; not norms
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr, betas=(0.9, 0.95))
    rows = []
    order = batches(len(encoded), config.batch_size, seed)
    for step in range(config.steps):
        t0 = time.perf_counter()
        lr = lr_at(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = collate([encoded[i] for i in next(order)], pad_id)
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        row = {"step": step + 1, "loss": loss.item(), "lr": lr, "seconds": time.perf_counter() - t0}
        rows.append(row)
        if log is not None:
            log(row)
    model.eval()
    return rows
