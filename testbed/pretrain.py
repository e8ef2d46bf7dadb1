"""Corpus pre-training of the testbed: next-token loss on the ad tokens of (prompt, ad) pairs, plus
copy supervision (``testbed.copy_supervision``).

This is not an RL loop and not a second trainer of the product: it turns the random testbed Llama
into a model that writes the ad format, copies the prompt's facts and varies between samples, so
that verl's SFT trainer (the cold start) and verl's RL loop have something to work on. Plain
PyTorch, one process, seeded.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from testbed.config import PretrainConfig
from testbed.copy_spans import copy_sources
from testbed.corpus import CorpusPair
from testbed.model import TURN_START


@dataclass(frozen=True)
class EncodedPair:
    """Token ids of one pair: the rendered prompt (generation prompt included) and the ad + end of turn,
    and which prompt token each copied ad token copies (``(j, s)``: ``testbed.copy_spans.copy_sources``)."""

    prompt_ids: list[int]
    response_ids: list[int]
    copies: tuple[tuple[int, int], ...] = ()


def user_turn(prompt_ids: Sequence[int], turn_start_id: int, turn_end_id: int) -> tuple[int, int]:
    """The prompt positions of the last turn before the generation prompt (the user turn, which holds the
    record's facts): from its turn-start token up to, not including, its end-of-turn token. The whole
    prompt when it has fewer than two turn starts."""
    starts = [i for i, t in enumerate(prompt_ids) if t == turn_start_id]
    if len(starts) < 2:
        return 0, len(prompt_ids)
    start, end = starts[-2], starts[-1]
    ends = [i for i in range(start, end) if prompt_ids[i] == turn_end_id]
    return start, ends[-1] if ends else end


def encode_pairs(pairs: Sequence[CorpusPair], tokenizer: Any, max_length: int) -> tuple[list[EncodedPair], int]:
    """Tokenise every pair as the chat template renders it and align its copies to the user turn; return
    those of at most ``max_length`` tokens and how many were longer (dropped)."""
    prompts = tokenizer.apply_chat_template([list(p.messages) for p in pairs], add_generation_prompt=True,
                                            tokenize=False)
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer([p.ad + tokenizer.eos_token for p in pairs], add_special_tokens=False)["input_ids"]
    turn_start = tokenizer.convert_tokens_to_ids(TURN_START)
    kept = [EncodedPair(p, r, tuple(copy_sources(p, r, user_turn(p, turn_start, tokenizer.eos_token_id))))
            for p, r in zip(prompt_ids, response_ids) if len(p) + len(r) <= max_length]
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
    (``step``, ``loss``: mean token loss of the ad tokens, the three copy-supervision losses of
    ``testbed.copy_supervision`` (0 when their weight is), ``lr``, ``seconds``)."""
    import torch

    from testbed.copy_supervision import (LOSS_NAMES, CopyValue, copy_attention_loss, copy_attention_targets,
                                          previous_token_loss)

    if len(encoded) < config.batch_size:
        raise ValueError(f"the corpus has {len(encoded)} pairs, fewer than one batch of {config.batch_size}")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(seed)
    supervised = bool(config.previous_token_weight or config.copy_attention_weight or config.copy_value_weight)
    attention_implementation = model.config._attn_implementation
    copy_value = None
    if supervised:
        model.set_attn_implementation("eager")  # the only one that returns attention probabilities
        copy_value = CopyValue(model)
    draws = torch.Generator().manual_seed(seed)
    zero = torch.zeros(())
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
        chosen = [encoded[i] for i in next(order)]
        batch = collate(chosen, pad_id)
        out = model(**batch, output_attentions=supervised)
        previous = copy_attention = copy_written = zero
        if config.previous_token_weight:
            previous = previous_token_loss(out.attentions[0], batch["attention_mask"])
        if config.copy_attention_weight:
            copy_attention = copy_attention_loss(out.attentions[-1], *copy_attention_targets(
                [len(e.prompt_ids) for e in chosen], [len(e.response_ids) for e in chosen], [e.copies for e in chosen]))
        if config.copy_value_weight:
            positions = batch["attention_mask"].bool()
            positions[:, 0] = False  # position 0 is the slot the copy head rests on: it writes nothing
            positions &= torch.rand(positions.shape, generator=draws) < config.copy_value_share
            copy_written = copy_value.loss(batch["input_ids"], positions)
        loss = (out.loss + config.previous_token_weight * previous + config.copy_attention_weight * copy_attention
                + config.copy_value_weight * copy_written)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        row = {"step": step + 1, "loss": out.loss.item(),
               **{name: value.item() for name, value in zip(LOSS_NAMES, (previous, copy_attention, copy_written))},
               "lr": lr, "seconds": time.perf_counter() - t0}
        rows.append(row)
        if log is not None:
            log(row)
    if copy_value is not None:
        copy_value.remove()
    model.set_attn_implementation(attention_implementation)
    model.eval()
    return rows
