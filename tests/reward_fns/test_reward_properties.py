"""Properties: no crash, bounded values, penalties inside the response, on hostile inputs."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from relate_common.ad_format import render_ad
from relate_common.records import AdRecord

from reward_fns.compose import RewardContext, score_batch
from reward_fns.config import preset
from tests.fixtures import FakeEncoder

RANGES = {
    "length": (0.0, 1.0), "format": (0.0, 1.0), "relevance": (0.0, 1.0), "correctness": (0.0, 1.0),
    "risk_blacklist": (0.0, 1.0), "risk_judge": (0.0, 1.0), "ctcvr": (0.0, 1.0), "diversity": (-1.0, 0.0),
}

SPECIAL = [
    "", " ", "\n\n\t ", "😀" * 30, "\x00\x01\x07\x1b\x7f", "\u200b\u200d\ufeff\u202e", "Title:\nDescription:",
    "标题：\n描述：", "Title: ＢＥＳＴ ＃１ ｆｒｅｅ\nDescription: ｒｉｓｋ－ｆｒｅｅ １００％",
    "标题：最好的 best 課程 🚀\n描述：保证通过！！！ visit www.x.com call 13812345678",
    "Title: a\r\nDescription: b\r\n", "Description: only\nTitle: swapped\nTitle: twice", "\ud800" if False else "\ufffd\ufffd",
]

text_st = st.one_of(
    st.sampled_from(SPECIAL),
    st.text(max_size=200),
    st.builds(lambda t, d, lang: render_ad(t, d, lang), st.text(max_size=60), st.text(max_size=150), st.sampled_from(["zh", "en"])),
    st.builds(lambda a, b: a + b, st.sampled_from(SPECIAL), st.text(alphabet=st.characters(codec="utf-8"), max_size=80)),
)


@pytest.fixture(scope="module")
def ctx(tokenizer):
    cfg = preset("relate")
    cfg.relevance.encoder = {"zh": "fake", "en": "fake"}
    cfg.diversity.min_group_fraction = 0.0
    cfg.diversity.min_groups = 2
    return RewardContext.build(cfg, tokenizer=tokenizer, encoders={"fake": FakeEncoder()})


def records(n):
    langs = ["zh", "en"]
    return [AdRecord(id=f"r{i % 3}", query="查询 query", bidword="词 word", selling_points=["卖点 point", "$9 十元"],
                     language=langs[i % 2]) for i in range(n)]


def check_batch(ctx, tokenizer, texts):
    enc = [tokenizer(t, add_special_tokens=False, return_offsets_mapping=True) for t in texts]
    ids = [e["input_ids"] for e in enc]
    offs = [e["offset_mapping"] for e in enc]
    n = len(texts)
    out = score_batch(records(n), texts, ids, offs, ctx=ctx, predicted_ctcvr=np.full(n, 0.01),
                      reference_ctcvr=np.full(n, 0.012), compute="all")
    for text, r, i in zip(texts, out.responses, ids):
        for name, v in r.values().items():
            if v is None:
                continue
            lo, hi = RANGES[name]
            assert lo <= v <= hi and np.isfinite(v), (name, v, text)
        assert np.isfinite(r.sentence_reward)
        assert 0.0 <= r.diversity_score <= 1.0
        assert r.token_penalty is not None and r.token_penalty.shape == (len(i),)
        assert set(np.round(r.token_penalty.astype(np.float64), 6).tolist()) <= {0.0, -0.2, -0.5, -0.7}
        for s in r.penalised_spans:
            a, b = s["span"]
            assert 0 <= a < b <= len(text) and text[a:b] == s["text"]
        for comp in r.components.values():
            for t in comp.triggers:
                if t.span is not None:
                    assert 0 <= t.span[0] <= t.span[1] <= len(text), (comp.name, t)
    # Batch-level arrays: no penalty outside a response's tokens.
    assert not out.credit.token_penalty[~out.credit.mask].any()
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(text_st, min_size=1, max_size=5))
def test_hostile_batches_are_scored_within_range(ctx, tokenizer, texts):
    check_batch(ctx, tokenizer, texts)


def test_twenty_thousand_characters(ctx, tokenizer):
    long_zh = render_ad("最好" * 10, ("专业洗牙，保证满意。" * 2000)[:20_000], "zh")
    long_en = render_ad("Best", ("Guaranteed results, call now! " * 700)[:20_000], "en")
    noise = ("😀\x00\u200b标题：Title: " * 1500)[:20_000]
    t = time.perf_counter()
    out = check_batch(ctx, tokenizer, [long_zh, long_en, noise, long_zh])
    assert time.perf_counter() - t < 60
    assert out.responses[0].values()["length"] < 1.0  # a 20k-character description is far too long
    assert out.responses[1].values()["risk_blacklist"] == 0.0


def test_templates_repeated_across_prompts_are_penalised_inside_the_text(ctx, tokenizer):
    texts = [render_ad(f"产品{i}号", f"第{i}款产品，立即咨询了解更多优惠详情。", "zh") for i in range(4)]
    out = check_batch(ctx, tokenizer, texts)
    # records() gives groups r0 r1 r2 r0: three groups share the template.
    for r, text in zip(out.responses, texts):
        spans = [text[s["span"][0] : s["span"][1]] for s in r.penalised_spans if s["source"] == "diversity"]
        assert any("立即咨询了解更多优惠详情" in s for s in spans), spans
