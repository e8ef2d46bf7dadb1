"""RelateTrainer._compute_advantage on a real local Ray + TransferQueue batch: token penalties land
on the right tokens (RELATE), sentence-level diversity joins r_i (Model 3), and the rest is verl's GRPO."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from tests.fixtures import REPO

TEMPLATE = "Book your free consultation today"

# (uid, query, title, description): 4 prompts x 2 responses. The template line is written for 3 of
# the 4 prompts (a template); "Guaranteed" is blacklisted; group g3 is clean.
ROWS = [
    ("g0", "dentist near me", "Gentle Dental Care in Leeds", f"Family dentist with evening hours. {TEMPLATE}."),
    ("g0", "dentist near me", "Evening Dentist Appointments", "Check-ups from 45 GBP, open until 8pm on weekdays."),
    ("g1", "tax accountant for freelancers", "Freelancer Tax Returns Done", f"Fixed fee of 150 GBP per return. {TEMPLATE}."),
    ("g1", "tax accountant for freelancers", "Guaranteed Tax Refund Help", "Chartered accountants who file your return on time."),
    ("g2", "wedding photographer", "Relaxed Wedding Photography", f"Full-day coverage and an online gallery. {TEMPLATE}."),
    ("g2", "wedding photographer", "Natural Wedding Photos", "Documentary style, 400+ edited images per wedding."),
    ("g3", "dog grooming", "Calm Dog Grooming Salon", "Hand drying and nail trims for nervous dogs, from 35 GBP."),
    ("g3", "dog grooming", "Mobile Dog Groomer", "We come to your door with a fully equipped van."),
]


def _records():
    return [{"id": f"rec-{uid}", "query": q, "bidword": q.split()[0], "selling_points": ["open weekdays"],
             "language": "en", "landing_page": "", "industry": "", "title": "", "description": ""}
            for uid, q, _, _ in ROWS]


@pytest.fixture(scope="module")
def ray_tq():
    import ray
    import transfer_queue as tq
    from omegaconf import OmegaConf

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    tq.init(OmegaConf.create({"backend": {"SimpleStorage": {"num_data_storage_units": 1}}}))
    yield tq
    tq.close()
    ray.shutdown()


def _config(preset: str):
    from hydra import compose, initialize_config_dir

    from recipe.relate.main_relate import prepare_config

    with initialize_config_dir(config_dir=str(REPO / "recipe/relate/config"), version_base=None):
        cfg = compose(config_name="relate_trainer", overrides=[f"relate.preset={preset}", "relate.ctcvr_model_dir=/unused"])
    return prepare_config(cfg, inputs=False)  # the trainer gets its batches from the tests


def _put_batch(tq, tokenizer, partition: str, scores: list[float]):
    from relate_common.ad_format import render_ad
    from verl.utils import tensordict_utils as tu

    texts = [render_ad(t, d, "en") for _, _, t, d in ROWS]
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids = [torch.tensor(tokenizer(t, add_special_tokens=False)["input_ids"] + [eos]) for t in texts]
    rm = [torch.zeros(len(x)) for x in ids]
    for r, s in zip(rm, scores):
        r[-1] = s
    keys = [f"{uid}_{i}_0" for i, (uid, _, _, _) in enumerate(ROWS)]
    fields = {
        "uid": [uid for uid, _, _, _ in ROWS],
        "responses": torch.nested.as_nested_tensor(ids, layout=torch.jagged),
        "response_mask": torch.nested.as_nested_tensor([torch.ones(len(x), dtype=torch.int64) for x in ids], layout=torch.jagged),
        "rm_scores": torch.nested.as_nested_tensor(rm, layout=torch.jagged),
        "reward_model": [{"ground_truth": rec, "style": "rule"} for rec in _records()],
        "extra_fields": [{"reward_extra_info": {"reward_length": 1.0, "reward_format": 0.5 * (i % 2)}} for i in range(len(ROWS))],
    }
    meta = tq.kv_batch_put(keys=keys, partition_id=partition, fields=tu.get_tensordict(fields), tags=[{} for _ in keys])
    return meta, texts, ids


def _trainer(preset, tokenizer):
    from recipe.relate.relate_trainer import RelateTrainer

    trainer = RelateTrainer(_config(preset))
    trainer.tokenizer = tokenizer  # what _init_tokenizer would load from actor_rollout_ref.model.path
    return trainer


def _grpo(scores: list[float], lengths: list[int]) -> torch.Tensor:
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn

    L = max(lengths)
    rewards = torch.zeros(len(scores), L)
    mask = torch.zeros(len(scores), L)
    for i, (s, n) in enumerate(zip(scores, lengths)):
        rewards[i, n - 1], mask[i, :n] = s, 1.0
    adv, _ = get_adv_estimator_fn("grpo_vectorized")(rewards, mask, np.array([r[0] for r in ROWS], dtype=object))
    return adv


def _token_spans(tokenizer, text: str, needle: str) -> set[int]:
    """Token indices (of tokenizer(text)) overlapping the character span of ``needle``."""
    start = text.index(needle)
    end = start + len(needle)
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return {t for t, (a, b) in enumerate(offsets) if a < end and b > start}


SCORES = [1.0, 2.0, 0.5, 3.0, 2.5, 2.0, 1.0, 1.5]


def test_relate_advantages_carry_token_penalties_at_the_right_tokens(ray_tq, tokenizer):
    meta, texts, ids = _put_batch(ray_tq, tokenizer, "relate", SCORES)
    trainer = _trainer("relate", tokenizer)
    metrics: dict = {}
    trainer._compute_advantage(meta, metrics)
    adv = ray_tq.kv_batch_get(keys=meta.keys, partition_id="relate", select_fields=["advantages"])["advantages"]
    adv = adv.to_padded_tensor(padding=0.0)
    lengths = [len(x) for x in ids]
    sentence = _grpo(SCORES, lengths)
    token = adv - sentence
    lam1, lam2 = trainer.reward_config.credit.lambda1, trainer.reward_config.credit.lambda2
    alpha = trainer.reward_config.credit.alpha
    for i, text in enumerate(texts):
        penalised = {int(t) for t in torch.nonzero(token[i].abs() > 1e-6).flatten()}
        # the shared line is ". Book your free consultation today." in all three: its punctuation is shared too
        template = _token_spans(tokenizer, text, f". {TEMPLATE}.") if TEMPLATE in text else set()
        blacklisted = _token_spans(tokenizer, text, "Guaranteed") if "Guaranteed" in text else set()
        assert penalised <= template | blacklisted, (i, text)
        if template:  # the template's tokens are penalised with -alpha * lambda2
            assert len(penalised & template) >= 0.8 * len(template)
            torch.testing.assert_close(token[i, sorted(penalised & template)], torch.full((len(penalised & template),), -alpha * lam2))
        if blacklisted:
            torch.testing.assert_close(token[i, sorted(blacklisted)], torch.full((len(blacklisted),), -alpha * lam1))
        if not template and not blacklisted:
            assert not penalised  # clean responses get exactly verl's GRPO advantage
        assert torch.all(adv[i, lengths[i]:] == 0)
    assert metrics["relate/g_high_size"] > 0
    assert metrics["relate/penalised_tokens/blacklist"] == pytest.approx(len(_token_spans(tokenizer, texts[3], "Guaranteed")) / 8)
    assert 0 < metrics["relate/token_advantage_share"] < 1
    assert metrics["relate/reward/format"] == pytest.approx(0.25) and metrics["relate/reward/length"] == 1.0


def test_model3_adds_sentence_diversity_to_rm_scores_and_keeps_plain_grpo(ray_tq, tokenizer):
    meta, texts, ids = _put_batch(ray_tq, tokenizer, "model3", SCORES)
    trainer = _trainer("model3", tokenizer)
    credit, _ = trainer.relate_credit(meta)
    metrics: dict = {}
    trainer._compute_advantage(meta, metrics)
    got = ray_tq.kv_batch_get(keys=meta.keys, partition_id="model3", select_fields=["advantages", "rm_scores"])
    rm = got["rm_scores"].to_padded_tensor(padding=0.0).sum(dim=1)
    with_template = np.array([TEMPLATE in t for t in texts])
    div = credit.sentence_diversity
    assert np.all(div[with_template] < 0) and np.all(div[~with_template] == 0)
    torch.testing.assert_close(rm, torch.tensor(SCORES) + torch.tensor(div, dtype=torch.float32))
    expected = _grpo(rm.tolist(), [len(x) for x in ids])
    assert torch.equal(got["advantages"].to_padded_tensor(padding=0.0), expected)
    assert metrics["relate/token_advantage_share"] == 0.0


def test_trainer_refuses_a_non_relate_estimator():
    from recipe.relate.relate_trainer import RelateTrainer

    cfg = _config("relate")
    cfg.algorithm.adv_estimator = "grpo"
    with pytest.raises(ValueError, match="algorithm.adv_estimator=relate"):
        RelateTrainer(cfg)
