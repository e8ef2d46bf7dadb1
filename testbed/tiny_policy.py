"""A tiny causal LM with an "ad grammar" prior, for tests, smoke runs and benchmarks (seconds per RL step).

The tiny policy is a random-initialised 2-layer Llama (hidden size 64) with the real SmolLM2
tokenizer, whose attention and MLP outputs start at zero and whose embeddings / LM head encode a
small bigram "ad grammar" (``Title: words ... newline Description: words ... <|im_end|>``) with
random branching. A purely random LM never writes a line that parses as an ad, so every reward
would be the same constant, every advantage 0 and every update a no-op: runs on it could not
show learning. With the grammar prior, samples differ in format and length, rewards vary inside
each group and RL steps really train.

    from testbed.tiny_policy import build_tiny_policy
    build_tiny_policy(tokenizer, Path("/tmp/tiny_policy"))   # a Hugging Face model folder

:func:`build_random_tiny_llama` saves the same architecture with its random initialisation untouched
(the tests' model: attention and positions matter in its outputs); :func:`tiny_llama_config` is the
one place the tiny size is written.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

# Bigram grammar: token text -> [(next token text, weight)]; WORDS expand to every word.
WORDS = [" Fast", " local", " service", " open", " today", " call", " now", " licensed", " experts", " repairs",
         " fixed", " prices", " book", " online"]
GRAMMAR = {
    "\n": [("Title", 2.0), ("Description", 1.0)],
    "Title": [(":", 1.0)],
    "Description": [(":", 1.0)],
    ":": [("WORDS", 1.0)],
    "WORD": [("WORDS", 6.0), (".", 1.0), ("\n", 1.0), ("<|im_end|>", 0.5)],
    ".": [("\n", 2.0), ("<|im_end|>", 1.0), ("WORDS", 1.0)],
}
GRAMMAR_LOGIT = 16.0  # logit of an allowed next token: other tokens get ~1e-3 of the mass per step


def single_token_id(tokenizer: Any, text: str) -> int:
    """The id of ``text``, which must be one token of ``tokenizer`` (ValueError otherwise)."""
    if text in tokenizer.get_vocab() and text.startswith("<|"):
        return tokenizer.convert_tokens_to_ids(text)
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"{text!r} is {len(ids)} tokens of this tokenizer; the tiny policy's grammar needs one each")
    return ids[0]


def tiny_llama_config(vocab_size: int, **overrides: Any) -> Any:
    """The tiny Llama's ``LlamaConfig``: 2 layers, hidden size 64, 4 heads over 2 key/value heads
    (grouped-query attention), rotary positions; ``overrides`` set further fields."""
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=vocab_size, **overrides)


def build_random_tiny_llama(tokenizer: Any, path: str | Path, seed: int = 0) -> Path:
    """Save the tiny Llama, randomly initialised with ``seed``, with ``tokenizer`` into ``path``."""
    import torch
    from transformers import LlamaForCausalLM

    path = Path(path)
    torch.manual_seed(seed)
    LlamaForCausalLM(tiny_llama_config(len(tokenizer))).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_policy(tokenizer: Any, path: str | Path, seed: int = 0) -> Path:
    """Save the tiny grammar-prior Llama (see module docstring) with ``tokenizer`` into ``path``.

    ``tokenizer``: a ChatML tokenizer (SmolLM2's: ``relate_common.assets.smollm2_tokenizer_dir``).
    The same seed gives the same weights.
    """
    import torch
    from transformers import LlamaForCausalLM

    path = Path(path)
    torch.manual_seed(seed)
    config = tiny_llama_config(len(tokenizer), tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
                               eos_token_id=single_token_id(tokenizer, "<|im_end|>"), pad_token_id=None)
    model = LlamaForCausalLM(config)
    script = ["\n", "Title", "Description", ":", ".", "<|im_end|>", *WORDS]
    ids = {text: single_token_id(tokenizer, text) for text in script}
    slot = {text: k for k, text in enumerate(script)}  # one hidden dimension per grammar token
    H = config.hidden_size
    with torch.no_grad():
        for layer in model.model.layers:  # the residual stream starts as the embedding itself
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb, head = model.model.embed_tokens.weight, model.lm_head.weight
        for text in script:
            emb[ids[text]] = 0.0
            emb[ids[text], slot[text]] = 1.0  # RMSNorm turns this into sqrt(H) on that dimension
        for cur, nexts in GRAMMAR.items():
            sources = WORDS if cur == "WORD" else [cur]
            expanded = [(w, weight / len(WORDS)) for name, weight in nexts if name == "WORDS" for w in WORDS]
            expanded += [(name, weight) for name, weight in nexts if name != "WORDS"]
            for src in sources:
                for nxt, weight in expanded:
                    head[ids[nxt], slot[src]] = (GRAMMAR_LOGIT + math.log(weight)) / math.sqrt(H)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
