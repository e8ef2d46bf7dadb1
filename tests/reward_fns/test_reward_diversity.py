"""reward_fns.ngram_stats and reward_fns.attribution: G_high, eq. 4, eq. 5, spans <-> tokens."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from relate_common.ad_format import render_ad
from relate_common.records import AdRecord

from reward_fns.attribution import (
    _utf8_chars,
    decode_with_offsets,
    pad_batch,
    spans_to_token_mask,
    token_mask_to_spans,
    token_penalty,
)
from reward_fns.compose import batch_credit
from reward_fns.config import DiversityConfig, preset
from reward_fns.ngram_stats import (
    batch_ngram_statistics,
    batch_ngram_statistics_reference,
    diversity_penalty,
    group_threshold,
    ngram_keys,
)

# ---- the statistics on token ids ---------------------------------------------------------------------

HAND = np.array([[1, 2, 3, 4], [1, 2, 3, 4], [9, 2, 3, 8], [5, 6, 7, 8], [5, 6, 1, 1]])


def small_cfg(**kw) -> DiversityConfig:
    base = dict(n_min=2, n_max=3, min_groups=2, min_group_fraction=0.0, delta_d=0.05)
    base.update(kw)
    return DiversityConfig(**base)


def test_hand_checked_batch():
    # Groups A A B C D. Bigram (2,3) is in groups A and B, (5,6) in C and D: G_high = both.
    # (1,2), (3,4), (1,2,3), (2,3,4) are only in group A: a group agreeing with itself.
    s = batch_ngram_statistics(HAND, ["A", "A", "B", "C", "D"], small_cfg())
    assert s.threshold == 2 and s.n_groups == 4
    assert len(s.high_freq_ngrams) == 2 and sorted(s.group_freq.tolist()) == [2, 2]
    assert s.count.tolist() == [1, 1, 1, 1, 1]
    assert s.token_mask.astype(int).tolist() == [[0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 1, 0], [1, 1, 0, 0], [1, 1, 0, 0]]
    assert s.diversity_score.tolist() == [0.5] * 5
    assert s.penalty(small_cfg()).tolist() == [-0.05] * 5


def test_same_batch_with_one_group_per_response_sees_templates():
    s = batch_ngram_statistics(HAND, [0, 1, 2, 3, 4], small_cfg())
    # Now rows 0 and 1 are two prompts: (1,2), (3,4), (1,2,3), (2,3,4) join G_high.
    assert len(s.high_freq_ngrams) == 6
    assert s.count.tolist() == [5, 5, 1, 1, 1]
    assert s.token_mask[0].all()


def test_threshold_scales_with_groups():
    cfg = DiversityConfig()  # 5% of groups, at least 3
    assert group_threshold(288, cfg) == 15 and group_threshold(10, cfg) == 3 and group_threshold(1, cfg) == 3
    one_group = batch_ngram_statistics(np.tile(np.arange(20), (5, 1)), [7] * 5, cfg)
    assert len(one_group.high_freq_ngrams) == 0  # G identical samples of one prompt: no template


def test_penalty_is_bounded_by_the_floor():
    cfg = DiversityConfig(delta_d=0.05, floor=-1.0)
    assert diversity_penalty(np.array([0, 4, 100]), cfg).tolist() == [0.0, -0.2, -1.0]


def test_padding_and_invalid_tokens_never_form_ngrams():
    ids = np.array([[1, 2, 0, 0], [1, 2, 0, 0], [1, 2, 0, 0]])
    valid = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 1, 1]], dtype=bool)
    s = batch_ngram_statistics(ids, [0, 1, 2], small_cfg(), valid=valid)
    assert s.count.tolist() == [1, 1, 0]  # (1,2) in 2 groups; (0,0) padding and row 2's broken pair never count
    assert not (s.token_mask & ~valid).any()


def test_keys_distinguish_lengths_and_orders():
    keys, oks = ngram_keys(np.array([[1, 2, 1, 2, 2, 1]]), np.ones((1, 6), bool), 2, 3)
    k2 = keys[2][0].tolist()
    assert k2[0] == k2[2] and k2[0] != k2[1] and len(set(k2)) == 3  # (1,2) (2,1) (1,2) (2,2) (2,1)
    assert not set(keys[2].ravel().tolist()) & set(keys[3].ravel().tolist())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    B=st.integers(1, 12),
    L=st.integers(0, 14),
    vocab=st.integers(1, 5),
    n_groups=st.integers(1, 6),
)
def test_vectorised_equals_plain_python(data, B, L, vocab, n_groups):
    ids = np.array(data.draw(st.lists(st.lists(st.integers(0, vocab), min_size=L, max_size=L), min_size=B, max_size=B)),
                   dtype=np.int64).reshape(B, L)
    groups = data.draw(st.lists(st.integers(0, n_groups - 1), min_size=B, max_size=B))
    valid = np.array(data.draw(st.lists(st.lists(st.booleans(), min_size=L, max_size=L), min_size=B, max_size=B)),
                     dtype=bool).reshape(B, L)
    cfg = DiversityConfig(n_min=2, n_max=data.draw(st.integers(2, 6)), min_groups=data.draw(st.integers(1, 3)),
                          min_group_fraction=data.draw(st.sampled_from([0.0, 0.3])))
    elig = None
    if data.draw(st.booleans()):
        rng = np.random.default_rng(data.draw(st.integers(0, 10_000)))
        elig = {n: rng.random((B, max(L - n + 1, 0))) < 0.7 for n in range(cfg.n_min, cfg.n_max + 1)}
    vec = batch_ngram_statistics(ids, groups, cfg, valid=valid, eligible=elig)
    ref = batch_ngram_statistics_reference(ids.tolist(), groups, cfg, valid=valid.tolist(), eligible=elig)
    assert len(vec.high_freq_ngrams) == len(ref["high_freq_ngrams"])
    assert vec.count.tolist() == ref["count"]
    assert vec.token_mask.tolist() == ref["token_mask"]
    assert vec.diversity_score.tolist() == pytest.approx(ref["diversity_score"])


# ---- text side: labels, prompt copies, function words (real tokenizer) ---------------------------------


def record(rid, selling_points, language="en", bidword="bidword", query="query"):
    return AdRecord(id=rid, query=query, bidword=bidword, selling_points=selling_points, language=language)


def tokenize(tokenizer, texts):
    enc = [tokenizer(t, add_special_tokens=False, return_offsets_mapping=True) for t in texts]
    return [e["input_ids"] for e in enc], [e["offset_mapping"] for e in enc]


def penalised_text(text, offsets, mask):
    """The penalised characters, runs joined by '|' (byte tokens of one character count once)."""
    return "|".join(text[a:b] for a, b in token_mask_to_spans(np.asarray(mask)[: len(offsets)], np.asarray(offsets), text))


def test_prompt_copies_are_relevance_not_templates_en(tokenizer):
    cfg = preset("relate")
    cfg.diversity.min_group_fraction = 0.0
    cfg.diversity.min_groups = 3
    # Group 0's prompt offers free shipping; groups 1-3 write it without being asked.
    recs = [record("a", ["Free shipping on all orders"]), record("b", ["Hand-made leather"]),
            record("c", ["Family owned since 1990"]), record("d", ["Open on Sundays"])]
    bodies = ["Sturdy oak desks", "Soft leather bags", "Fresh bakery bread", "Quiet dental care"]
    texts = [render_ad(b, f"{b} with free shipping today. Call now to learn more.", "en") for b in bodies]
    ids, offs = tokenize(tokenizer, texts)
    # The trap: the same words tokenise differently alone and in context.
    alone = tokenizer("free shipping", add_special_tokens=False)["input_ids"]
    assert not any(ids[0][i : i + len(alone)] == alone for i in range(len(ids[0])))
    credit = batch_credit(texts, ids, offs, [r.id for r in recs], recs, cfg)
    pen = [penalised_text(t, o, m) for t, o, m in zip(texts, offs, credit.stats.token_mask)]
    assert "Call now to learn more" in pen[0] and "free shipping" not in pen[0]  # copied from its own prompt
    for p in pen[1:]:
        assert "free shipping" in p and "Call now to learn more" in p  # 3 prompts wrote it unasked
    for t, p in zip(texts, pen):
        assert "Title" not in p and "Description" not in p  # labels are never templates
    # Without the copy filter, group 0's copy would be penalised too.
    credit_nf = batch_credit(texts, ids, offs, [r.id for r in recs], None, cfg)
    assert "free shipping" in penalised_text(texts[0], offs[0], credit_nf.stats.token_mask[0])


def test_prompt_copies_are_relevance_not_templates_zh(tokenizer):
    cfg = preset("relate")
    cfg.diversity.min_group_fraction = 0.0
    cfg.diversity.min_groups = 3
    recs = [record(f"z{i}", ["全国包邮到家", f"门店{i}"], language="zh") for i in range(4)]
    titles = ["实木书桌耐用好看", "真皮手袋轻便百搭", "现烤面包新鲜出炉", "口腔诊所安静舒适"]
    texts = [render_ad(t, f"{t}，全国包邮到家，立即咨询了解更多详情。", "zh") for t in titles]
    ids, offs = tokenize(tokenizer, texts)
    credit = batch_credit(texts, ids, offs, [r.id for r in recs], recs, cfg)
    for t, o, m in zip(texts, offs, credit.stats.token_mask):
        p = penalised_text(t, o, m)
        assert "立即咨询了解更多详情" in p
        assert "全国包邮到家" not in p and "标题" not in p and "描述" not in p
    # Half-character byte tokens: every token of a penalised character is flagged (none half-marked).
    for o, m in zip(offs, credit.stats.token_mask):
        by_char: dict = {}
        for (a, b), flag in zip(o, m):
            by_char.setdefault((a, b), set()).add(bool(flag))
        assert all(len(v) == 1 for v in by_char.values())


def test_function_word_pairs_are_not_templates(tokenizer):
    cfg = preset("relate")
    cfg.diversity.min_group_fraction = 0.0
    cfg.diversity.min_groups = 2
    texts = [render_ad(f"Topic {w}", f"{w} is good with a view of the sea.", "en") for w in ("Alpha", "Bravo", "Delta")]
    ids, offs = tokenize(tokenizer, texts)
    credit = batch_credit(texts, ids, offs, [0, 1, 2], None, cfg)
    pen = penalised_text(texts[0], offs[0], credit.stats.token_mask[0])
    assert "view" in pen and "sea" in pen  # content words make " a view of the sea" a template
    cfg.diversity.stopwords = "stopwords.yaml"
    only_function = [render_ad(f"Topic {w}", f"{w}, with a, of the.", "en") for w in ("Alpha", "Bravo", "Delta")]
    ids2, offs2 = tokenize(tokenizer, only_function)
    assert batch_credit(only_function, ids2, offs2, [0, 1, 2], None, cfg).stats.count.tolist() == [0, 0, 0]


# ---- attribution ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["标题：最好的英语培训\n描述：保证通过，100%退款", "Title: Best course\nDescription: Guaranteed pass, 100% refund",
     "Title: 混合 mixed 文本 😀\nDescription: ｆｕｌｌ ｗｉｄｔｈ", ""],
)
def test_decode_with_offsets_matches_the_fast_tokenizer(tokenizer, text):
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids = enc["input_ids"] + [im_end]
    decoded, off = decode_with_offsets(tokenizer, ids)
    assert decoded == text == tokenizer.decode(ids, skip_special_tokens=True)
    assert off[:-1].tolist() == [list(o) for o in enc["offset_mapping"]]
    assert off[-1].tolist() == [len(text), len(text)]  # EOS: empty span at the end


def test_decode_with_offsets_of_a_cut_multibyte_character(tokenizer):
    ids = tokenizer("英语", add_special_tokens=False)["input_ids"]
    for k in range(1, len(ids) + 1):
        text, off = decode_with_offsets(tokenizer, ids[:k])
        assert text == tokenizer.decode(ids[:k])
        assert (off[:, 0] <= off[:, 1]).all() and off.max() <= len(text)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=24))
def test_utf8_mapping_matches_python_replace(data):
    text, index = _utf8_chars(data)
    assert text == data.decode("utf-8", "replace")
    assert len(index) == len(data)
    if data:
        assert index.min() >= 0 and index.max() < len(text) and (np.diff(index) >= 0).all()


def test_spans_to_tokens_zh_and_en(tokenizer):
    zh = "标题：最好的英语培训\n描述：保证通过"
    enc = tokenizer(zh, add_special_tokens=False, return_offsets_mapping=True)
    off = np.array(enc["offset_mapping"])
    m = spans_to_token_mask([(3, 5)], off)  # 最好
    flagged = {zh[a:b] for (a, b), f in zip(off, m) if f}
    assert flagged == {"最", "好"}
    assert m.sum() == sum(1 for a, b in off if 3 <= a < 5)  # every byte token of both characters
    en = "Title: The best course\nDescription: ok"
    enc = tokenizer(en, add_special_tokens=False, return_offsets_mapping=True)
    off = np.array(enc["offset_mapping"])
    a = en.index("best")
    m = spans_to_token_mask([(a, a + 4)], off)
    assert [en[s:e] for (s, e), f in zip(off, m) if f] == [" best"]
    assert token_mask_to_spans(m, off, en) == [(a, a + 4)]


def test_token_penalty_eq5():
    bl = np.array([[1, 1, 0, 0]], dtype=bool)
    ng = np.array([[0, 1, 1, 0]], dtype=bool)
    r = token_penalty(bl, ng, 0.5, 0.2, (1, 4))
    assert r[0].tolist() == pytest.approx([-0.5, -0.7, -0.2, 0.0])
    assert token_penalty(None, None, 0.5, 0.2, (2, 3)).tolist() == [[0.0] * 3] * 2


def test_pad_batch_ragged_and_padded():
    ids, off, mask = pad_batch([[5, 6], [7]], [[(0, 1), (1, 2)], [(0, 3)]])
    assert ids.tolist() == [[5, 6], [7, 0]] and mask.tolist() == [[True, True], [True, False]]
    ids2, off2, mask2 = pad_batch(ids, off, mask)
    assert (ids2 == ids).all() and (mask2 == mask).all()
    with pytest.raises(ValueError):
        pad_batch([[1, 2]], [[(0, 1)]])


def test_batch_credit_on_generated_ids_with_eos_and_padding(tokenizer):
    """The trainer's call: padded (B, L) generated ids, decode_with_offsets, response_mask."""
    cfg = preset("relate")
    cfg.diversity.min_group_fraction = 0.0
    recs = [record(f"p{i}", ["sp"]) for i in range(3)]
    texts = [render_ad(f"Item {i} for sale", "Best price. Call now to learn more about it.", "en") for i in range(3)]
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    rows = [tokenizer(t, add_special_tokens=False)["input_ids"] + [eos] for t in texts]
    L = max(map(len, rows)) + 3
    ids = np.full((3, L), eos, dtype=np.int64)
    mask = np.zeros((3, L), dtype=bool)
    for b, r in enumerate(rows):
        ids[b, : len(r)] = r
        mask[b, : len(r)] = True
    decoded, offs = zip(*(decode_with_offsets(tokenizer, ids[b]) for b in range(3)))
    assert list(decoded) == texts
    credit = batch_credit(list(decoded), ids, np.stack(offs), ["g0", "g1", "g2"], recs, cfg, response_mask=mask)
    assert credit.token_penalty.shape == (3, L)
    assert (credit.token_penalty[~mask] == 0).all()
    for b in range(3):
        best = texts[b].index("Best")
        flagged = [texts[b][s:e] for (s, e), v in zip(offs[b], credit.token_penalty[b]) if v <= -cfg.credit.lambda1]
        assert "Best" in "".join(flagged)
        assert credit.blacklist_spans[b] == [(best, best + 4)]
        assert "Call now to learn more" in "".join(texts[b][a:e] for a, e in credit.diversity_spans[b])
