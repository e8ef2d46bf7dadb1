"""Every size and setting of the testbed build, in one place (``python -m testbed build`` flags override some).

None of this is the paper's: the paper trains Qwen3-8B. The testbed is ours, a stand-in small enough
that verl's RL step costs seconds on 2 CPU cores, so that RL dynamics can be watched without a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TokenizerConfig:
    """A byte-level BPE trained at build time on the corpus (chosen over SmolLM2's 49,152-token
    vocabulary by measurement: ``benchmarks/bench_testbed_tokenizer.py`` prints both)."""

    vocab_size: int = 3000  # merges for both languages' frequent pieces; byte-level, so any text still encodes


@dataclass(frozen=True)
class ModelConfig:
    """The Llama the testbed is (tied embeddings, rotary positions; as many key/value heads as heads)."""

    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    max_position_embeddings: int = 1024


@dataclass(frozen=True)
class PretrainConfig:
    """Corpus pre-training (``testbed.pretrain``): next-token loss on the ad tokens only."""

    recombined_records: int = 3000  # recombined records in the corpus (x9 ad variants each; module testbed.corpus)
    steps: int = 1000  # optimiser steps (~0.27 s each on 2 cores at the default sizes)
    batch_size: int = 16  # sequences per step
    lr: float = 4e-3  # AdamW peak learning rate (linear warm-up, cosine decay to 10%)
    warmup_steps: int = 50
    weight_decay: float = 0.01
    max_length: int = 384  # prompt + ad tokens; longer pairs are dropped and counted
    threads: int | None = None  # torch intra-op threads (None: torch's default, every core)


@dataclass(frozen=True)
class TestbedConfig:
    """The whole build: corpus, tokenizer, model, pre-training; ``seed`` fixes all of it."""

    tokenizer: TokenizerConfig = TokenizerConfig()
    model: ModelConfig = ModelConfig()
    pretrain: PretrainConfig = PretrainConfig()
    prompt_style: str = "compact"  # data_prep.prompts style: the demo's RL and SFT sets use it too
    seed: int = 0
