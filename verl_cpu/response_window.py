"""Response-window scoring for the CPU engine: LM-head logits for the response tokens only.

verl's dense (``use_remove_padding: false``) path right-pads each prompt+response row, takes the
full-vocabulary logits of every position and then computes log-probs and entropy for all of them
(``verl/workers/engine/fsdp/transformer_impl.py:1476-1533``). Its RL consumers read only the response
window of those outputs: position ``p_i - 1 + j`` of row ``i`` for response token ``j``
(``verl/workers/utils/padding.py:135-138`` ``no_padding_2_padding``, ``:207-209``
``response_from_nested``). On a host the logits are most of the cost (a 49k vocabulary: one
``(rows, positions, vocab)`` float tensor per pass, then softmax and entropy over it), and prompts
are several times longer than responses.

This module lays a micro-batch out as verl's rollout does, prompts left-padded to a common end and
responses right-padded from a common start, so that the positions predicting response tokens are
the same columns ``P-1 .. P+R-2`` for every row; the model is asked for the logits of those columns
only (transformers' ``logits_to_keep``), and the per-token results are put back at the positions
verl expects. Prompt positions carry 0: nothing in verl's RL path reads them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict


@dataclass(frozen=True)
class ResponseWindow:
    """A micro-batch of ``B`` rows in the response-aligned layout.

    ``input_ids``, ``position_ids``, ``attention_mask``: (B, P + R), prompts ending at column P - 1,
    responses starting at column P (P, R: the longest prompt and response). ``response_ids`` and
    ``response_mask``: (B, R). ``sequence_index``: (n_response_tokens,), where each response token's
    result goes in verl's packed (total_nnz,) layout; ``offsets``: (B + 1,), that layout's row starts.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    sequence_index: torch.Tensor
    offsets: torch.Tensor

    @property
    def response_len(self) -> int:
        return self.response_ids.shape[1]

    def to_sequences(self, per_token: torch.Tensor) -> torch.Tensor:
        """(B, R) results of the response tokens -> verl's nested (B, j) layout, 0 at prompt positions."""
        values = per_token[self.response_mask]
        flat = values.new_zeros(int(self.offsets[-1])).index_put((self.sequence_index,), values)
        return torch.nested.nested_tensor_from_jagged(flat, self.offsets)


def response_lengths(micro_batch: TensorDict) -> torch.Tensor:
    """Tokens of each row's response, (B,): as verl's ``no_padding_2_padding`` counts them
    (``padding.py:115-124``): nested ``responses``, or the response part of ``attention_mask``."""
    responses = micro_batch["responses"]
    if responses.is_nested:
        return responses.offsets().diff()
    prompt_width = micro_batch["prompts"].shape[1]
    return micro_batch["attention_mask"][:, prompt_width:].sum(dim=1)


def response_window(input_ids: torch.Tensor, position_ids: torch.Tensor, response_lens: torch.Tensor,
                    pad_token_id: int) -> ResponseWindow:
    """Lay out nested (B, j) ``input_ids`` / ``position_ids`` (prompt then response per row) with
    ``response_lens`` (B,) tokens of response each, as described in :class:`ResponseWindow`."""
    offsets = input_ids.offsets()
    seq_lens = offsets.diff()
    response_lens = response_lens.to(seq_lens)
    prompt_lens = seq_lens - response_lens
    if bool((prompt_lens <= 0).any()):
        raise ValueError(f"every row needs a prompt token before its response; prompt lengths {prompt_lens.tolist()}")
    batch, prompt_width, response_width = len(seq_lens), int(prompt_lens.max()), int(response_lens.max())
    column = torch.arange(prompt_width + response_width, device=offsets.device)
    start = (prompt_width - prompt_lens).unsqueeze(1)
    valid = (column >= start) & (column < prompt_width + response_lens.unsqueeze(1))  # (B, P + R)
    # Row-major order of the valid cells is each row's tokens in order: verl's packed order.
    ids = torch.full((batch, prompt_width + response_width), pad_token_id, dtype=input_ids.dtype, device=offsets.device)
    ids[valid] = input_ids.values()
    positions = torch.zeros_like(ids, dtype=position_ids.dtype)
    positions[valid] = position_ids.values()
    response_mask = valid[:, prompt_width:]
    # Response token j of row i is predicted at packed position offsets[i] + prompt_lens[i] - 1 + j.
    j = torch.arange(response_width, device=offsets.device).expand(batch, -1)
    sequence_index = (offsets[:-1] + prompt_lens - 1).unsqueeze(1) + j
    return ResponseWindow(input_ids=ids, position_ids=positions, attention_mask=valid.to(torch.int64),
                          response_ids=ids[:, prompt_width:], response_mask=response_mask,
                          sequence_index=sequence_index[response_mask], offsets=offsets)
