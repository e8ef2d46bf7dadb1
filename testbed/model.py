"""The testbed's tokenizer and (untrained) model: a small byte-level BPE and a small Llama over it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from testbed.config import ModelConfig, TokenizerConfig
from testbed.corpus import CorpusPair

# ChatML's special tokens: the RL and SFT sets are chat conversations, and verl's rollout ends a
# response on the tokenizer's EOS, which must be the chat template's end of turn.
PAD_TOKEN, TURN_START, EOS_TOKEN = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (PAD_TOKEN, TURN_START, EOS_TOKEN)
CHAT_ROLES = ("system", "user", "assistant")
# Plain ChatML. For a conversation that opens with a system turn (every prompt of data_prep.prompts)
# it renders exactly as SmolLM2-135M-Instruct's template does (tests/testbed/test_testbed.py checks), so the
# testbed and SmolLM2 read the same prompt text; unlike SmolLM2's it adds no default system turn,
# which verl's SFT dataset relies on when it renders turns one at a time
# (verl/utils/tokenizer/chat_template.py:114-138, extract_system_prompt_and_generation).
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def train_tokenizer(texts: Iterable[str], config: TokenizerConfig, chat_template: str) -> Any:
    """A byte-level BPE (``transformers.PreTrainedTokenizerFast``) trained on ``texts`` with the ChatML
    specials, EOS ``<|im_end|>``, pad ``<|endoftext|>`` and ``chat_template``. Deterministic for the
    same texts in the same order."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=config.vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN,
                                   chat_template=chat_template)


def corpus_tokenizer(pairs: Sequence[CorpusPair], config: TokenizerConfig) -> Any:
    """The testbed's tokenizer: :func:`train_tokenizer` on what the model reads and writes (every turn
    of the prompts, the ads and the role names) with :data:`CHATML_TEMPLATE`."""
    texts = [*(m["content"] for p in pairs for m in p.messages), *(p.ad for p in pairs), *CHAT_ROLES]
    return train_tokenizer(texts, config, CHATML_TEMPLATE)


def init_model(tokenizer: Any, config: ModelConfig, seed: int) -> Any:
    """A randomly initialised ``LlamaForCausalLM`` over ``tokenizer``'s vocabulary (seeded)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    llama = LlamaConfig(vocab_size=len(tokenizer), hidden_size=config.hidden_size,
                        intermediate_size=config.intermediate_size, num_hidden_layers=config.num_hidden_layers,
                        num_attention_heads=config.num_attention_heads, num_key_value_heads=config.num_key_value_heads,
                        max_position_embeddings=config.max_position_embeddings, tie_word_embeddings=True,
                        rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
                        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(llama)
