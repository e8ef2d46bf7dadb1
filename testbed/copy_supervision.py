"""Copy supervision: auxiliary losses that build a copy circuit in the testbed during pre-training.

An ad copies its prompt's bidword and selling points. A transformer copies with an induction
circuit: a head in layer 0 that looks at the previous token, and a head in a later layer that
looks at the prompt token whose predecessor is the token just written, and writes that token.
Trained on the next-token loss alone, the testbed (0.8M parameters, ~1,000 steps) never formed one:
its held-out ads copied nothing (testbed/README.md has the runs). These losses tell two heads what
to look at and one head what to write, so the circuit forms within the build budget:

* ``previous_token_loss``: layer 0, head 0 attends to the previous position.
* ``copy_attention_loss``: the last layer's head 0, at the position before each ad token, attends to
  the prompt token that the ad token copies (``testbed.copy_spans``), or to position 0 (a slot that
  writes nothing useful) when the ad token is the model's own.
* ``copy_value_loss``: that head's value at a position, read through the final norm and the tied
  LM head, predicts the token at that position: what the head looks at is what it writes.

Heads are supervised by index (head 0); the other heads are free. The attention probabilities come
from transformers' eager attention (``output_attentions``), which the SDPA kernel does not return.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

SUPERVISED_HEAD = 0
# The per-step metrics of the three losses (testbed.pretrain's rows, testbed.build's report).
LOSS_NAMES = ("previous_token_loss", "copy_attention_loss", "copy_value_loss")


def previous_token_loss(attention: Any, attention_mask: Any) -> Any:
    """Mean of ``-log attention[b, head 0, q, q - 1]`` over the real positions ``q >= 1``.

    ``attention``: (B, H, T, T) probabilities of layer 0; ``attention_mask``: (B, T), 1 on real tokens
    (right padding)."""
    import torch

    t = attention.shape[-1]
    q = torch.arange(1, t)
    real = attention_mask[:, 1:].bool()
    p = attention[:, SUPERVISED_HEAD, q, q - 1]
    return -torch.log(p[real] + 1e-9).mean()


def copy_attention_targets(prompt_lengths: Sequence[int], response_lengths: Sequence[int],
                           copies: Sequence[Sequence[tuple[int, int]]]) -> tuple[list[int], list[int], list[int]]:
    """``(rows, queries, sources)`` for :func:`copy_attention_loss`: one per ad token of every row.

    The query is the position that predicts ad token ``j`` (``prompt_length + j - 1``); the source is
    the prompt position it copies (``copies``: ``(j, s)`` pairs of ``testbed.copy_spans.copy_sources``)
    or 0 when it copies nothing."""
    rows, queries, sources = [], [], []
    for row, (length, n, pairs) in enumerate(zip(prompt_lengths, response_lengths, copies, strict=True)):
        copied = dict(pairs)
        for j in range(n):
            rows.append(row)
            queries.append(length + j - 1)
            sources.append(copied.get(j, 0))
    return rows, queries, sources


def copy_attention_loss(attention: Any, rows: Sequence[int], queries: Sequence[int], sources: Sequence[int]) -> Any:
    """Mean of ``-log attention[row, head 0, query, source]``; ``attention``: (B, H, T, T) of the last layer."""
    import torch

    p = attention[torch.tensor(rows), SUPERVISED_HEAD, torch.tensor(queries), torch.tensor(sources)]
    return -torch.log(p + 1e-9).mean()


class CopyValue:
    """Records the input of the last layer's attention, for :meth:`loss`.

    Hooks ``self_attn`` of the last decoder layer: ``LlamaDecoderLayer.forward`` calls it with
    ``hidden_states=`` as a keyword (transformers 5.10, models/llama/modeling_llama.py, the decoder
    layer's forward), after the input RMSNorm, which is what ``v_proj`` reads."""

    def __init__(self, model: Any):
        self.model = model
        self.attention = model.model.layers[-1].self_attn
        self.head_dim = self.attention.head_dim
        if self.attention.v_proj.bias is not None or self.attention.o_proj.bias is not None:
            raise ValueError("copy value supervision expects attention projections without bias (Llama's default)")
        self.hidden: Any = None
        self.handle = self.attention.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module: Any, args: tuple, kwargs: dict) -> None:
        self.hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]

    def loss(self, input_ids: Any, positions: Any) -> Any:
        """Cross-entropy of head 0's value at ``positions`` ((B, T) bool), through its slice of
        ``o_proj``, the final norm and the LM head, against the token at that position (0, with no
        gradient, when no position is chosen)."""
        import torch

        if not positions.any():
            return torch.zeros(())
        lo, hi = SUPERVISED_HEAD * self.head_dim, (SUPERVISED_HEAD + 1) * self.head_dim
        hidden = self.hidden[positions]  # (N, hidden)
        value = hidden @ self.attention.v_proj.weight[lo:hi].T  # (N, head_dim); Llama's v_proj has no bias
        written = value @ self.attention.o_proj.weight[:, lo:hi].T  # (N, hidden)
        logits = self.model.lm_head(self.model.model.norm(written))
        return torch.nn.functional.cross_entropy(logits, input_ids[positions])

    def remove(self) -> None:
        self.handle.remove()
