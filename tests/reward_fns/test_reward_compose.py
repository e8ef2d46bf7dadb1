"""reward_fns.compose: sentence reward per preset, token penalty (eq. 5), single sample == batch,
the component registry."""

from __future__ import annotations

import numpy as np
import pytest
from relate_common.ad_format import render_ad
from relate_common.records import AdRecord

import reward_fns.compose as compose
from reward_fns.compose import REWARD_COMPONENT_REGISTRY, get_reward_component, register_reward_component
from reward_fns.compose import RewardContext, batch_credit, score_batch, score_samples, sentence_reward
from reward_fns.config import COMPONENTS, PRESETS, preset
from reward_fns.judge import JudgeVerdict
from reward_fns.types import ComponentScore


class FakeEncoder:
    """Deterministic bag-of-characters encoder (stands in for USE where relevance is not the point)."""

    name = "fake"
    dim = 64

    def encode(self, texts, batch_size=64):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for ch in t.lower():
                out[i, hash(ch) % self.dim] += 1.0
        n = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(n, 1e-12)


class StubJudge:
    """Answers without a network: non-compliant when the title contains 'best' / '最'."""

    def __init__(self, fail: bool = False):
        self.fail = fail
        self.calls = 0

    def judge_many(self, reqs):
        self.calls += len(reqs)
        if self.fail:
            return [JudgeVerdict.neutral(0.5, "timeout") for _ in reqs]
        out = []
        for r in reqs:
            bad = "best" in r.title.lower() or "最" in r.title
            out.append(JudgeVerdict(score=0.3 if bad else 0.9, correct=not bad, compliant=not bad, issues=["x"] if bad else []))
        return out


def ctx_for(name, tokenizer, judge=None, **cfg_changes):
    cfg = preset(name)
    for section, values in cfg_changes.items():
        for k, v in values.items():
            setattr(getattr(cfg, section), k, v)
    spec = {"fake": FakeEncoder()}
    cfg.relevance.encoder = {"zh": "fake", "en": "fake"}
    return RewardContext.build(cfg, tokenizer=tokenizer, encoders=spec, judge=judge)


REC_EN = AdRecord(id="en1", query="dentist near me", bidword="dental cleaning",
                  selling_points=["Board-certified dentists", "Cleaning from $79"], language="en")
REC_ZH = AdRecord(id="zh1", query="洗牙多少钱", bidword="洗牙", selling_points=["专业牙医", "洗牙79元起"], language="zh")
EN_BAD = render_ad("The Best Dental Cleaning in Town", "Board-certified dentists, cleaning from $79. Book today.", "en")
ZH_BAD = render_ad("全城最好的洗牙诊所，专业牙医", "专业牙医为你洗牙，洗牙79元起，欢迎预约到店体验。", "zh")


def encode(tokenizer, texts):
    enc = [tokenizer(t, add_special_tokens=False, return_offsets_mapping=True) for t in texts]
    return [e["input_ids"] for e in enc], [e["offset_mapping"] for e in enc]


def test_relate_moves_blacklist_to_token_level_zh_and_en(tokenizer):
    recs, texts = [REC_EN, REC_ZH], [EN_BAD, ZH_BAD]
    ids, offs = encode(tokenizer, texts)
    ctcvr = dict(predicted_ctcvr=[0.01, 0.01], reference_ctcvr=[0.01, 0.01])
    rel = score_batch(recs, texts, ids, offs, ctx=ctx_for("relate", tokenizer), **ctcvr)
    m4 = score_batch(recs, texts, ids, offs, ctx=ctx_for("model4", tokenizer), **ctcvr)
    cfg = preset("relate")
    for b, (r, m) in enumerate(zip(rel.responses, m4.responses)):
        v = r.values()
        assert v["risk_blacklist"] == 0.5 and m.values()["risk_blacklist"] == 0.5  # computed in both...
        expected = sum(cfg.weights[c] * v[c] for c in ("length", "format", "ctcvr", "relevance", "correctness"))
        assert r.sentence_reward == pytest.approx(expected)  # ...but only model4 sums it
        assert m.sentence_reward == pytest.approx(expected + 1.0 * 0.5 + 1.0 * v["diversity"])
        assert m.token_penalty is None
        tp = r.token_penalty
        assert tp.shape == (len(ids[b]),)
        flagged = {texts[b][s:e] for (s, e), x in zip(offs[b], tp) if x <= -cfg.credit.lambda1 + 1e-6}
        if b == 0:
            assert flagged == {" Best", " The"}  # "The Best" is one lexicon entry
        else:
            assert flagged == {"最", "好"}  # every byte token of both characters
        assert set(np.unique(tp).round(6)) <= {0.0, -0.5, -0.2, -0.7}
        assert [s["source"] for s in r.penalised_spans] == ["blacklist"]


def test_sentence_part_of_one_sample_equals_the_batch(tokenizer):
    recs, texts = [REC_EN, REC_ZH], [EN_BAD, ZH_BAD]
    ids, offs = encode(tokenizer, texts)
    ctx = ctx_for("model4", tokenizer)
    kw = dict(predicted_ctcvr=[0.012, 0.008], reference_ctcvr=[0.01, 0.01])
    batch = score_samples(recs, texts, ctx, offsets=[np.array(o) for o in offs], **kw)
    for i in range(2):
        one = score_samples([recs[i]], [texts[i]], ctx, offsets=[np.array(offs[i])],
                            predicted_ctcvr=[kw["predicted_ctcvr"][i]], reference_ctcvr=[kw["reference_ctcvr"][i]])[0]
        assert one.values() == pytest.approx(batch[i].values())
        assert one.sentence_reward == pytest.approx(batch[i].sentence_reward)
    # score_batch's sentence reward = the per-sample part + the batch diversity term.
    full = score_batch(recs, texts, ids, offs, ctx=ctx, **kw)
    for s, r, d in zip(batch, full.responses, full.credit.sentence_diversity):
        assert r.sentence_reward == pytest.approx(s.sentence_reward + d)


def test_ctcvr_is_required_only_where_weighted(tokenizer):
    ctx2 = ctx_for("model2", tokenizer)
    with pytest.raises(ValueError, match="predicted_ctcvr"):
        score_samples([REC_EN], [EN_BAD], ctx2)
    s = score_samples([REC_EN], [EN_BAD], ctx2, predicted_ctcvr=[0.02], reference_ctcvr=[0.01])[0]
    assert s.values()["ctcvr"] > 0.5
    assert s.sentence_reward == pytest.approx(s.values()["length"] + s.values()["format"] + 2.0 * s.values()["ctcvr"])
    m1 = score_samples([REC_EN], [EN_BAD], ctx_for("model1", tokenizer))[0]  # no CTCVR needed, none invented
    assert m1.values()["ctcvr"] is None and set(m1.components) == {"length", "format"}


def test_judge_feeds_correctness_and_risk(tokenizer):
    judge = StubJudge()
    ctx = ctx_for("model4", tokenizer, judge=judge, correctness={"use_judge": True}, risk={"use_judge": True})
    out = score_samples([REC_EN, REC_EN], [EN_BAD, render_ad("Dental Cleaning", "From $79. Book today.", "en")], ctx,
                        predicted_ctcvr=[0.01, 0.01], reference_ctcvr=[0.01, 0.01])
    assert judge.calls == 2
    assert out[0].values()["risk_judge"] == 0.0 and out[1].values()["risk_judge"] == 1.0
    assert out[0].compliant is False and out[1].compliant is True
    assert out[1].values()["correctness"] == pytest.approx(0.5 * 1.0 + 0.5 * 0.9)
    # A failing judge: neutral scores, nothing raised, compliance falls back to the blacklist.
    ctx_f = ctx_for("model4", tokenizer, judge=StubJudge(fail=True), correctness={"use_judge": True}, risk={"use_judge": True})
    f = score_samples([REC_EN], [render_ad("Dental Cleaning", "From $79. Book today.", "en")], ctx_f,
                      predicted_ctcvr=[0.01], reference_ctcvr=[0.01])[0]
    assert f.values()["risk_judge"] == 0.5 and f.compliant is True
    assert f.values()["correctness"] == pytest.approx(0.5 * 1.0 + 0.5 * 0.5)


def test_model3_adds_sentence_level_diversity(tokenizer):
    template = " Call now to learn more about our offers."
    recs = [AdRecord(id=f"r{i}", query="q", bidword="b", selling_points=["s"], language="en") for i in range(4)]
    texts = [render_ad(f"Service number {i}", f"Item {i} is here.{template}", "en") for i in range(4)]
    ids, offs = encode(tokenizer, texts)
    cfg = preset("model3")
    cfg.diversity.min_group_fraction = 0.0
    credit = batch_credit(texts, ids, offs, [r.id for r in recs], recs, cfg)
    assert (credit.diversity_penalty < 0).all()
    assert credit.sentence_diversity == pytest.approx(cfg.weights["diversity"] * credit.diversity_penalty)
    assert not credit.token_penalty.any()  # sentence-level: nothing at token level
    rel = batch_credit(texts, ids, offs, [r.id for r in recs], recs, _relate_low_threshold())
    assert not rel.sentence_diversity.any() and (rel.token_penalty <= -0.2 + 1e-6).any()


def _relate_low_threshold():
    cfg = preset("relate")
    cfg.diversity.min_group_fraction = 0.0
    return cfg


def test_sentence_reward_skips_missing_values():
    cfg = preset("relate")
    assert sentence_reward({"length": 1.0, "format": 0.5, "risk_judge": None, "risk_blacklist": 0.0}, cfg) == 1.5


def test_caller_supplied_verdicts_and_scalar_extra_info(tokenizer):
    """An async reward manager awaits the judge itself and passes the verdicts in."""
    judge = StubJudge()
    ctx = ctx_for("model4", tokenizer, judge=judge, correctness={"use_judge": True}, risk={"use_judge": True})
    v = JudgeVerdict(score=0.1, correct=False, compliant=False, issues=["made-up price"])
    s = score_samples([REC_EN], [render_ad("Dental Cleaning", "From $79. Book today.", "en")], ctx,
                      predicted_ctcvr=[0.01], reference_ctcvr=[0.01], verdicts=[v])[0]
    assert judge.calls == 0
    assert s.values()["risk_judge"] == 0.0 and s.compliant is False
    assert s.values()["correctness"] == pytest.approx(0.5 * 1.0 + 0.5 * 0.1)
    info = s.extra_info()
    assert all(isinstance(x, float) for x in info.values())
    assert info["compliant"] == 0.0 and info["judge_failed"] == 0.0 and info["reward_diversity"] != info["reward_diversity"]
    with pytest.raises(ValueError):
        score_samples([REC_EN], ["x"], ctx, predicted_ctcvr=[0.01], reference_ctcvr=[0.01], verdicts=[])


# ---- the component registry ------------------------------------------------------------------------


def test_unknown_component_error_lists_the_known_names():
    with pytest.raises(ValueError, match="unknown reward component 'lenght'") as err:
        get_reward_component("lenght")
    assert all(name in str(err.value) for name in COMPONENTS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_component_resolves(name):
    cfg = preset(name)
    for c in [*cfg.weights, *cfg.token_level]:
        assert get_reward_component(c) is REWARD_COMPONENT_REGISTRY[c]
    assert set(REWARD_COMPONENT_REGISTRY) == set(COMPONENTS)  # config validates weights against COMPONENTS
    assert compose.BATCH_LEVEL_COMPONENTS == {"diversity"}


def test_registering_a_taken_name_raises():
    before = dict(REWARD_COMPONENT_REGISTRY)
    with pytest.raises(ValueError, match="'length' has already been registered"):
        register_reward_component("length")(lambda x: [None] * len(x.records))
    assert REWARD_COMPONENT_REGISTRY == before
    fn = get_reward_component("length")
    assert register_reward_component("length")(fn) is fn  # the same function again: a no-op (reload)
    assert REWARD_COMPONENT_REGISTRY == before


def test_a_new_component_is_one_decorated_function(tokenizer, monkeypatch):
    monkeypatch.setattr(compose, "REWARD_COMPONENT_REGISTRY", dict(REWARD_COMPONENT_REGISTRY))
    monkeypatch.setattr(compose, "BATCH_LEVEL_COMPONENTS", set(compose.BATCH_LEVEL_COMPONENTS))

    @register_reward_component("exclamations")
    def _score(x):
        return [ComponentScore("exclamations", float(t.count("!")), []) for t in x.responses]

    ctx = ctx_for("model1", tokenizer)
    texts = [render_ad("Dental Cleaning!", "From $79! Book today!", "en"), EN_BAD]
    out = score_samples([REC_EN, REC_EN], texts, ctx, compute=["length", "exclamations"])
    assert [list(s.components) for s in out] == [["length", "exclamations"]] * 2
    assert [s.components["exclamations"].value for s in out] == [3.0, 0.0]
    assert "exclamations" not in REWARD_COMPONENT_REGISTRY  # the module's registry is untouched
