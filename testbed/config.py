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
    # Rotary base. A copy head matches a token by content 30-150 positions back (an ad copying its
    # prompt); of a 32-wide head's 16 rotary pairs, 6 turn under half a radian over 150 positions at
    # Llama's 10,000, 9 at 1e6. Not shown to matter: builds at both copied equally (testbed/README.md).
    rope_theta: float = 1e6


@dataclass(frozen=True)
class PretrainConfig:
    """Corpus pre-training (``testbed.pretrain``): next-token loss on the ad tokens plus copy supervision."""

    recombined_records: int = 3000  # made-up records in the corpus, one ad per simulator variant each (testbed.corpus)
    invented_share: float = 0.5  # share of them with invented facts; the rest recombine real records' facts
    # Simulator variants left out of the corpus. "overlong" pads a description with one filler sentence
    # repeated four times: a lesson in repeating, and a copying model's failures are repetition loops
    # (testbed/README.md has both builds' figures).
    left_out_variants: tuple[str, ...] = ("overlong",)
    steps: int = 1000  # optimiser steps (~0.21 s each on 2 cores at the default sizes)
    batch_size: int = 16  # sequences per step
    lr: float = 4e-3  # AdamW peak learning rate (linear warm-up, cosine decay to 10%)
    warmup_steps: int = 50
    weight_decay: float = 0.01
    max_length: int = 384  # prompt + ad tokens; longer pairs are dropped and counted
    threads: int | None = None  # torch intra-op threads (None: torch's default, every core)
    # Copy supervision (module testbed.pretrain): auxiliary losses that build a copy circuit, which
    # the next-token loss alone does not build within this budget (testbed/README.md has the runs).
    previous_token_weight: float = 1.0  # layer 0, head 0: attend to the previous token
    copy_attention_weight: float = 1.0  # last layer, head 0: attend to the prompt token the ad copies next
    copy_value_weight: float = 1.0  # that head's value, read through the LM head, is the token it looks at
    copy_value_share: float = 0.25  # share of positions drawn each step for the value loss (cost)


@dataclass(frozen=True)
class TestbedConfig:
    """The whole build: corpus, tokenizer, model, pre-training; ``seed`` fixes all of it."""

    tokenizer: TokenizerConfig = TokenizerConfig()
    model: ModelConfig = ModelConfig()
    pretrain: PretrainConfig = PretrainConfig()
    prompt_style: str = "compact"  # data_prep.prompts style: the demo's RL and SFT sets use it too
    seed: int = 0
