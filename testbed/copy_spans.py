"""Where an ad copies its prompt: token alignment of a response to the facts of its prompt.

The testbed's pre-training supervises one attention head to look at the prompt token that the ad
copies next (``testbed.pretrain``); this module finds those tokens. Pure functions over token ids.
"""

from __future__ import annotations

from collections.abc import Sequence


def match_length(response_ids: Sequence[int], j: int, prompt_ids: Sequence[int], s: int, end: int) -> int:
    """How many tokens ``response_ids[j:]`` and ``prompt_ids[s:end]`` agree on from their starts."""
    m = 0
    while j + m < len(response_ids) and s + m < end and response_ids[j + m] == prompt_ids[s + m]:
        m += 1
    return m


def copy_sources(prompt_ids: Sequence[int], response_ids: Sequence[int], facts: tuple[int, int],
                 min_span: int = 2) -> list[tuple[int, int]]:
    """``(j, s)`` for every response token ``j`` that copies the prompt token ``s`` of the fact region
    ``facts = (start, end)`` (a half-open range of prompt positions: the user turn).

    A token continues a copy when the one before it copied ``s - 1`` and it equals ``prompt_ids[s]``.
    Otherwise it starts one at the prompt position where the longest run of the response agrees
    with the prompt (the first such position on ties), if that run is at least ``min_span`` tokens,
    or if the token occurs once in the region and nowhere in the prompt before it (a token that
    distinctive is a copy even alone). Every ``(j, s)`` has ``response_ids[j] == prompt_ids[s]``;
    ``j`` rises strictly.
    """
    start, end = facts
    if not 0 <= start <= end <= len(prompt_ids):
        raise ValueError(f"fact region {facts} is not inside a prompt of {len(prompt_ids)} tokens")
    before = set(prompt_ids[:start])
    region = prompt_ids[start:end]
    out: list[tuple[int, int]] = []
    previous: int | None = None
    for j, token in enumerate(response_ids):
        source = None
        if previous is not None and previous + 1 < end and prompt_ids[previous + 1] == token:
            source = previous + 1
        else:
            best, best_length = None, 0
            for s in range(start, end):
                if prompt_ids[s] == token:
                    length = match_length(response_ids, j, prompt_ids, s, end)
                    if length > best_length:
                        best, best_length = s, length
            distinctive = token not in before and region.count(token) == 1
            if best is not None and (best_length >= min_span or distinctive):
                source = best
        if source is not None:
            out.append((j, source))
        previous = source
    return out
