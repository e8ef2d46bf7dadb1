"""testbed.copy_spans: which prompt token each ad token copies."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.copy_spans import copy_sources

tokens = st.lists(st.integers(0, 12), max_size=30)


def test_a_copied_fact_is_aligned_token_by_token_and_format_tokens_are_not():
    #        system turn | user turn: label 7, fact 20 21 22, label 8, fact 30 31
    prompt = [1, 7, 5, 2, 7, 20, 21, 22, 8, 30, 31, 3]
    facts = (4, 11)
    response = [7, 9, 20, 21, 22, 9, 31, 40]  # 7 occurs in the system turn too: not distinctive alone
    assert copy_sources(prompt, response, facts) == [(2, 5), (3, 6), (4, 7), (6, 10)]


def test_the_longest_agreeing_run_wins_over_an_earlier_shorter_one():
    prompt = [50, 1, 2, 9, 1, 2, 3]
    assert copy_sources(prompt, [1, 2, 3], (0, 7)) == [(0, 4), (1, 5), (2, 6)]


def test_copies_never_reach_outside_the_fact_region():
    prompt = [20, 21, 22, 5, 20, 21]
    assert copy_sources(prompt, [20, 21, 22], (3, 6)) == [(0, 4), (1, 5)]


def test_a_region_outside_the_prompt_is_an_error():
    with pytest.raises(ValueError, match="fact region"):
        copy_sources([1, 2, 3], [1], (2, 4))


@settings(max_examples=300, deadline=None)
@given(prompt=tokens, response=tokens, cut=st.tuples(st.integers(0, 30), st.integers(0, 30)), min_span=st.integers(1, 4))
def test_every_alignment_points_at_an_equal_token_of_the_region(prompt, response, cut, min_span):
    start, end = sorted(min(c, len(prompt)) for c in cut)
    pairs = copy_sources(prompt, response, (start, end), min_span)
    assert all(response[j] == prompt[s] and start <= s < end for j, s in pairs)
    assert [j for j, _ in pairs] == sorted({j for j, _ in pairs})


@settings(max_examples=300, deadline=None)
@given(prompt=tokens, filler=st.lists(st.integers(100, 110), max_size=5), data=st.data())
def test_a_verbatim_span_of_the_region_is_aligned_whole(prompt, filler, data):
    if len(prompt) < 2:
        return
    a = data.draw(st.integers(0, len(prompt) - 2))
    b = data.draw(st.integers(a + 2, len(prompt)))
    response = filler + prompt[a:b] + filler  # filler tokens never occur in the prompt
    pairs = dict(copy_sources(prompt, response, (0, len(prompt))))
    assert set(range(len(filler), len(filler) + b - a)) <= set(pairs)
    assert all(j in range(len(filler), len(filler) + b - a) for j in pairs)


# --- the corpus's copies, on the real testbed tokenizer --------------------------------------------


def test_encoded_pairs_align_a_best_practice_ad_to_its_own_bidword_and_points():
    """encode_pairs finds the user turn and aligns every token of a copied fact to the prompt token it copies."""
    from data_prep.config import SAMPLE_RECORDS
    from relate_common.records import load_records
    from testbed.config import TokenizerConfig
    from testbed.corpus import build_corpus
    from testbed.model import TURN_START, corpus_tokenizer
    from testbed.pretrain import encode_pairs, user_turn

    records = load_records(SAMPLE_RECORDS)[0]
    pairs = [p for p in build_corpus(records, recombined=20, invented_share=0.5, seed=0, prompt_style="compact")
             if p.variant == "best_practice"]
    tokenizer = corpus_tokenizer(pairs, TokenizerConfig(vocab_size=600))
    encoded, dropped = encode_pairs(pairs, tokenizer, 10_000)
    assert dropped == 0 and len(encoded) == len(pairs)
    turn_start = tokenizer.convert_tokens_to_ids(TURN_START)
    for pair, e in zip(pairs, encoded):
        start, end = user_turn(e.prompt_ids, turn_start, tokenizer.eos_token_id)
        user_text = tokenizer.decode(e.prompt_ids[start:end])
        assert user_text == f"<|im_start|>user\n{pair.messages[1]['content']}"
        assert all(e.response_ids[j] == e.prompt_ids[s] and start <= s < end for j, s in e.copies)
        copied = tokenizer.decode([e.response_ids[j] for j, _ in e.copies]).replace(" ", "")
        points = [p[2:] for p in pair.messages[1]["content"].split("\n") if p.startswith("- ") and p[2:] in pair.ad]
        assert points, pair.ad  # a best-practice ad states a selling point verbatim: its text is aligned,
        # but for the first character, whose token can differ ("- 24" is " 24" in the prompt, "，24" is "24")
        assert all(p[1:].replace(" ", "") in copied for p in points), (pair.ad, copied)


def test_user_turn_is_the_whole_prompt_without_two_turn_starts():
    from testbed.pretrain import user_turn

    assert user_turn([5, 6, 7], turn_start_id=1, turn_end_id=2) == (0, 3)
    #                 system turn    user turn         generation prompt
    assert user_turn([1, 5, 2, 1, 6, 6, 2, 9, 1, 7], turn_start_id=1, turn_end_id=2) == (3, 6)
    assert user_turn([1, 5, 1, 6, 6, 1, 7], turn_start_id=1, turn_end_id=2) == (2, 5)


# --- the losses ------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 8), st.integers(0, 6), st.data()), min_size=1, max_size=4))
def test_copy_attention_targets_cover_every_ad_token_once(rows):
    from testbed.copy_supervision import copy_attention_targets

    lengths, sizes, copies = [], [], []
    for length, n, data in rows:
        js = data.draw(st.lists(st.integers(0, max(0, n - 1)), unique=True)) if n else []
        copies.append([(j, data.draw(st.integers(1, length))) for j in sorted(js)])
        lengths.append(length)
        sizes.append(n)
    r, q, s = copy_attention_targets(lengths, sizes, copies)
    assert len(r) == len(q) == len(s) == sum(sizes)
    k = 0
    for row, (length, n, pairs) in enumerate(zip(lengths, sizes, copies)):
        copied = dict(pairs)
        for j in range(n):
            assert (r[k], q[k], s[k]) == (row, length + j - 1, copied.get(j, 0))
            k += 1


def test_previous_token_loss_is_zero_for_a_previous_token_head_and_ignores_padding():
    import torch

    from testbed.copy_supervision import previous_token_loss

    t = 5
    previous = torch.zeros(2, 3, t, t)
    previous[:, :, 0, 0] = 1.0
    for q in range(1, t):
        previous[:, 0, q, q - 1] = 1.0
        previous[:, 1:, q, q] = 1.0  # other heads: anything
    mask = torch.tensor([[1] * t, [1, 1, 1, 0, 0]])
    assert previous_token_loss(previous, mask).item() == pytest.approx(0.0, abs=1e-6)
    uniform = torch.tril(torch.ones(t, t)) / torch.arange(1, t + 1).unsqueeze(1)
    loss = previous_token_loss(uniform.expand(2, 3, t, t), mask)
    expected = torch.tensor([-torch.log(uniform[q, q - 1]).item() for q in (1, 2, 3, 4, 1, 2)]).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)  # the padded rows' positions 3-4 left out


def test_copy_value_loss_trains_only_the_supervised_heads_slices():
    """The value loss reaches head 0's slices of the last layer's v_proj and o_proj (and the shared
    embedding / norms), never another head's."""
    import torch

    from transformers import LlamaForCausalLM

    from testbed.copy_supervision import CopyValue
    from testbed.tiny_policy import tiny_llama_config

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(50))
    probe = CopyValue(model)
    ids = torch.randint(0, 50, (2, 7))
    model(input_ids=ids)
    positions = torch.ones(2, 7, dtype=torch.bool)
    loss = probe.loss(ids, positions)
    loss.backward()
    attention, hd = probe.attention, probe.head_dim
    assert torch.isfinite(loss) and loss.item() > 0
    assert attention.v_proj.weight.grad[:hd].abs().sum() > 0 and attention.v_proj.weight.grad[hd:].abs().sum() == 0
    assert attention.o_proj.weight.grad[:, :hd].abs().sum() > 0 and attention.o_proj.weight.grad[:, hd:].abs().sum() == 0
    assert attention.q_proj.weight.grad is None
    assert probe.loss(ids, torch.zeros(2, 7, dtype=torch.bool)).item() == 0.0  # nothing drawn: no NaN
    probe.remove()
    model(input_ids=ids[:1])
    assert probe.hidden.shape[0] == 2  # the hook is gone: the last batch it saw had two rows
