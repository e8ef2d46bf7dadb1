"""Shared prompt prefixes in local mode (``local.share_prompt_prefix``): GRPO's G responses to one
prompt run that prompt once. The log-probs, entropies, gradients and samples must be those of the
plain layout (every response recomputes its prompt), on a random Llama where attention and rotary
positions matter, with prompts of different lengths, duplicates in any order, and responses of
different lengths (1 token included).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recipe.relate.local_rollout import generate_responses, load_policy
from recipe.relate.local_trainer import check_supported, compose_config, pack_sequences, pack_shared, response_log_probs

PAD = 0


@pytest.fixture(scope="module")
def sharp_model_dir(tiny_model_dir, tmp_path_factory):
    """The random Llama with unit-scale weights (1/sqrt(fan_in)) and embeddings: at the usual
    initializer_range=0.02 attention is near uniform and blind to positions, so a layout that got
    the rotary positions wrong would still pass."""
    model, tok = load_policy(str(tiny_model_dir), dtype="float32")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) / (1.0 if "embed" in name else p.shape[1] ** 0.5))
    path = tmp_path_factory.mktemp("sharp_llama")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def model64(sharp_model_dir):
    """In float64: the trunk of the two layouts then agrees to ~1e-15, and what is left is the
    float32 rounding of verl's log-softmax (token_log_probs casts to float32)."""
    model, tok = load_policy(str(sharp_model_dir), dtype="float32")
    return model.double(), tok


def _batch(draw_prompts, counts, response_lengths, seed=0):
    """Responses (ids 5..1000) per (prompt, count); prompt order shuffled so duplicates are not adjacent."""
    g = torch.Generator().manual_seed(seed)
    prompts = [p for p, c in zip(draw_prompts, counts) for _ in range(c)]
    order = torch.randperm(len(prompts), generator=g).tolist()
    prompts = [prompts[i] for i in order]
    responses = [torch.randint(5, 1000, (n,), generator=g).tolist() for n in response_lengths[:len(prompts)]]
    return prompts, responses


batches = st.tuples(
    st.lists(st.lists(st.integers(5, 1000), min_size=2, max_size=12), min_size=1, max_size=3, unique_by=tuple),
    st.lists(st.integers(1, 3), min_size=3, max_size=3),
    st.lists(st.integers(0, 9), min_size=9, max_size=9),
    st.integers(0, 1000),
)


@given(batches)
@settings(max_examples=40, deadline=None)
def test_pack_shared_stores_each_prompt_once_and_rebuilds_every_row(batch):
    distinct, counts, lengths, seed = batch
    prompts, responses = _batch(distinct, counts, lengths, seed)
    packed = pack_shared(prompts, responses, PAD)
    assert packed.prompt_ids.shape[0] == len(distinct)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        row = packed.prompt_ids[packed.prompt_index[i]]
        keep = packed.prompt_mask[packed.prompt_index[i]].bool()
        assert row[keep].tolist() == p
        assert packed.responses[i, :len(r)].tolist() == r
        assert packed.response_mask[i].sum() == len(r)
        assert packed.response_positions[i, 0] == len(p)  # rotary position of the first response token
    # The plain layout's responses and mask are the same tensors.
    plain = pack_sequences(prompts, responses, PAD)
    assert torch.equal(plain.responses, packed.responses) and torch.equal(plain.response_mask, packed.response_mask)


@given(batches)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_shared_log_probs_entropies_and_gradients_equal_the_plain_layout(model64, batch):
    model, _ = model64
    distinct, counts, lengths, seed = batch
    prompts, responses = _batch(distinct, counts, [max(1, n) for n in lengths], seed)
    weights = torch.randn(len(responses), max(map(len, responses)), generator=torch.Generator().manual_seed(seed),
                          dtype=torch.float64)
    results = []
    for packed in (pack_sequences(prompts, responses, PAD), pack_shared(prompts, responses, PAD)):
        model.zero_grad(set_to_none=True)
        lp, ent = response_log_probs(model, packed, temperature=0.7, with_entropy=True)
        mask = packed.response_mask.double()
        (lp * weights * mask).sum().backward()  # a loss of the shape of eq. 6: every token weighted
        grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        results.append((lp.detach() * mask, ent.detach() * mask, grads))
    (lp_a, ent_a, g_a), (lp_b, ent_b, g_b) = results
    torch.testing.assert_close(lp_b, lp_a, rtol=0, atol=1e-5)  # log-probs ~ -11: float32 rounding is ~1e-6
    torch.testing.assert_close(ent_b, ent_a, rtol=0, atol=1e-5)
    assert g_a.keys() == g_b.keys() and len(g_a) > 0
    for k in g_a:
        torch.testing.assert_close(g_b[k], g_a[k], rtol=1e-5, atol=1e-6 * float(g_a[k].abs().max()), msg=k)


def test_shared_prefill_generates_the_same_samples(sharp_model_dir):
    """Sampled and greedy, with batches that cut groups (n=3, batch_size=4) and prompts of
    different lengths: the RNG draws do not change, so the samples must not either."""
    model, tok = load_policy(str(sharp_model_dir))
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(5, 1000, (n,), generator=g).tolist() for n in (9, 4, 13)]
    for temperature in (1.0, 0.0):
        plain, shared = (generate_responses(model, tok, prompts, 3, temperature=temperature, top_p=0.9, max_new_tokens=12,
                                            seed=5, batch_size=4, share_prompt_prefix=share) for share in (False, True))
        assert shared == plain
        assert all(len(s) == 12 for group in plain for s in group)  # the random model never stops: all tokens compared
    assert len({tuple(s) for s in plain[0]}) == 1  # greedy: the three samples of a prompt agree


def test_share_prompt_prefix_refuses_gradient_checkpointing():
    config = compose_config(["actor_rollout_ref.model.enable_gradient_checkpointing=true"])
    with pytest.raises(ValueError, match="share_prompt_prefix=true with .*enable_gradient_checkpointing"):
        check_supported(config)
    check_supported(compose_config(["actor_rollout_ref.model.enable_gradient_checkpointing=true",
                                    "local.share_prompt_prefix=false"]))
