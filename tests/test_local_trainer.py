"""Local mode (recipe.relate.local_trainer): real RL steps on CPU with a tiny causal LM and the real
SmolLM2 tokenizer, verl's loss pieces, exact resume, NaN guards, empty responses, the CTCVR preset.

The tiny policy (``recipe.relate.tiny_policy``) is a random-initialised 2-layer Llama whose
embeddings / LM head encode a small bigram "ad grammar": samples differ in format and length,
rewards vary inside each group and the steps really train (a purely random LM would give every
response the same reward, so tests on it could not fail).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from recipe.relate.tiny_policy import build_tiny_policy

pytestmark = pytest.mark.slow

# ---- fixtures --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory, tokenizer) -> Path:
    return build_tiny_policy(tokenizer, tmp_path_factory.mktemp("tiny_policy"))


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    """data_prep's RL parquet of the bundled records; val cut to 4 rows (2 English) to keep
    validation cheap. The Chinese prompts (> 400 tokens) are dropped by the runs' length filter."""
    import pandas as pd
    from data_prep import build_dataset

    out = tmp_path_factory.mktemp("rl_dataset")
    build_dataset.main(["--output-dir", str(out)])
    val = pd.read_parquet(out / "val.parquet")
    english = val["reward_model"].map(lambda r: r["ground_truth"]["language"] == "en")
    pd.concat([val[english].head(2), val[~english].head(2)]).to_parquet(out / "val.parquet")
    return out


def overrides(policy: Path, data: Path, out: Path, *extra: str) -> list[str]:
    """CPU-sized run: 2 prompts x G=2, two updates per step, 20 new tokens, English prompts only
    (data.max_prompt_length=400 with filter_overlong_prompts drops the longer Chinese prompts),
    a checkpoint every 2 steps, no validation unless asked."""
    return ["relate.preset=model1", f"actor_rollout_ref.model.path={policy}",
            f"data.train_files={data / 'train.parquet'}", f"data.val_files={data / 'val.parquet'}",
            "data.train_batch_size=2", "data.max_prompt_length=400", "data.max_response_length=20",
            "data.val_max_samples=-1", "actor_rollout_ref.rollout.n=2", "actor_rollout_ref.actor.ppo_mini_batch_size=1",
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2", "actor_rollout_ref.actor.optim.lr=1e-3",
            "actor_rollout_ref.actor.kl_loss_coef=0.01", f"local.output_dir={out}", "local.max_steps=3",
            "local.checkpoint_every=2", "local.keep_checkpoints=null", "local.val_every=0", "local.export_final=false", "local.progress=false",
            *extra]


def run_local(*args: str) -> list[dict[str, float]]:
    from recipe.relate.local_trainer import compose_config, run

    return run(compose_config(list(args)))


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    assert files, f"no safetensors in {folder}"
    out = {}
    for f in files:
        out.update(load_file(f))
    return out


def comparable(row: dict[str, float]) -> dict[str, float]:
    """Training metrics that must be reproducible (no wall-clock timings, no validation)."""
    return {k: v for k, v in row.items() if not k.startswith(("timing_s/", "val/"))}


def assert_same_metrics(a: dict[str, float], b: dict[str, float]) -> None:
    a, b = comparable(a), comparable(b)
    assert a.keys() == b.keys()
    for k in a:
        assert (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k], f"{k}: {a[k]} != {b[k]}"


# ---- the loss is verl's ---------------------------------------------------------------------------------


def _loss_inputs(seed: int = 0, B: int = 6, R: int = 7):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([7, 3, 5, 1, 6, 4])[:B]
    mask = (torch.arange(R)[None, :] < lengths[:, None]).float()
    old = -torch.rand(B, R, generator=g) * 3
    log_prob = old + 0.4 * torch.randn(B, R, generator=g)  # ratios well outside [0.8, 1.2]: clipping matters
    ref = old + 0.3 * torch.randn(B, R, generator=g)
    adv = torch.randn(B, R, generator=g)
    return log_prob, old, ref, adv, mask


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_actor_loss_matches_verl_core_algos(agg):
    from omegaconf import OmegaConf
    from verl.trainer.ppo.core_algos import agg_loss, compute_policy_loss_vanilla, kl_penalty

    from recipe.relate.local_loss import actor_config, actor_loss
    from recipe.relate.local_trainer import compose_config

    cfg = compose_config([f"actor_rollout_ref.actor.loss_agg_mode={agg}", "actor_rollout_ref.actor.clip_ratio_high=0.28",
                          "actor_rollout_ref.actor.kl_loss_coef=0.05"])
    actor = actor_config(cfg.actor_rollout_ref.actor, rollout_n=2)
    log_prob, old, ref, adv, mask = _loss_inputs()
    log_prob.requires_grad_(True)
    ours = actor_loss(log_prob, old, adv, mask, actor, ref_log_prob=ref)

    # By hand, with verl's functions, on an independent config object.
    by_hand_cfg = actor_config(cfg.actor_rollout_ref.actor, rollout_n=2)
    pg, pg_metrics = compute_policy_loss_vanilla(old_log_prob=old, log_prob=log_prob, advantages=adv,
                                                 response_mask=mask.bool(), loss_agg_mode=agg, config=by_hand_cfg)
    kl = agg_loss(loss_mat=kl_penalty(log_prob, ref, "low_var_kl"), loss_mask=mask.bool(), loss_agg_mode=agg)
    expected = pg + 0.05 * kl
    torch.testing.assert_close(ours.loss, expected, rtol=0, atol=0)
    assert ours.pg_loss == float(pg.detach()) and ours.kl_loss == float(kl.detach())
    assert ours.pg_metrics == {k: float(v) for k, v in pg_metrics.items()}
    assert 0 < ours.pg_metrics["actor/pg_clipfrac"] < 1  # the inputs exercise the clip
    # Gradients agree too.
    (g_ours,) = torch.autograd.grad(ours.loss, log_prob, retain_graph=True)
    (g_hand,) = torch.autograd.grad(expected, log_prob)
    torch.testing.assert_close(g_ours, g_hand, rtol=0, atol=0)

    # Micro-batches normalised by the mini-batch totals (verl's global_batch_info) sum to the
    # mini-batch loss.
    parts = [[0, 1], [2, 3, 4], [5]]
    total = sum(actor_loss(log_prob[p], old[p], adv[p], mask[p], actor, ref_log_prob=ref[p],
                           batch_num_tokens=int(mask.sum()), global_batch_size=len(mask)).loss for p in parts)
    torch.testing.assert_close(total, expected, rtol=1e-6, atol=1e-7)
    assert OmegaConf.select(cfg, "actor_rollout_ref.actor.kl_loss_type") == "low_var_kl"


def test_actor_loss_matches_verl_ppo_loss():
    """Against verl's own engine loss function (no-padding layout, as the FSDP engine calls it)."""
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.losses import ppo_loss

    from recipe.relate.local_loss import actor_config, actor_loss
    from recipe.relate.local_trainer import compose_config

    cfg = compose_config(["actor_rollout_ref.actor.entropy_coeff=0.01"])
    log_prob, old, ref, adv, mask = _loss_inputs(seed=3)
    entropy = torch.rand_like(log_prob) * 2
    B, R = mask.shape
    prompt_lens = torch.tensor([3, 5, 2, 4, 1, 6])
    resp_lens = mask.sum(-1).long()
    P = int(prompt_lens.max())
    attention = torch.zeros(B, P + R, dtype=torch.long)
    flat_lp, flat_ent = [], []
    for i in range(B):
        attention[i, :prompt_lens[i]] = 1  # this layout's prompts are right-padded
        attention[i, P:P + resp_lens[i]] = 1
        seq = torch.zeros(int(prompt_lens[i] + resp_lens[i]))
        seq_e = torch.zeros_like(seq)
        seq[prompt_lens[i] - 1:prompt_lens[i] - 1 + resp_lens[i]] = log_prob[i, :resp_lens[i]].detach()
        seq_e[prompt_lens[i] - 1:prompt_lens[i] - 1 + resp_lens[i]] = entropy[i, :resp_lens[i]]
        flat_lp.append(seq)
        flat_ent.append(seq_e)
    data = TensorDict({"prompts": torch.zeros(B, P, dtype=torch.long), "responses": torch.zeros(B, R, dtype=torch.long),
                       "attention_mask": attention, "response_mask": mask, "old_log_probs": old, "advantages": adv,
                       "ref_log_prob": ref}, batch_size=[B])
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=int(mask.sum()), global_batch_size=B)
    verl_actor = actor_config(cfg.actor_rollout_ref.actor, rollout_n=2)
    verl_loss, verl_metrics = ppo_loss(verl_actor, {"log_probs": torch.cat(flat_lp), "entropy": torch.cat(flat_ent)}, data)

    ours = actor_loss(log_prob.detach(), old, adv, mask, actor_config(cfg.actor_rollout_ref.actor, rollout_n=2),
                      ref_log_prob=ref, entropy=entropy, batch_num_tokens=int(mask.sum()), global_batch_size=B)
    torch.testing.assert_close(ours.loss, verl_loss, rtol=1e-6, atol=1e-7)
    assert ours.kl_loss == pytest.approx(float(verl_metrics["kl_loss"].values[0]), rel=1e-6)


def test_token_log_probs_divide_by_temperature():
    from recipe.relate.local_loss import token_log_probs

    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(2, 5, 11, generator=g), torch.randint(0, 11, (2, 5), generator=g)
    lp, ent = token_log_probs(logits, labels, temperature=0.7, with_entropy=True)
    ref = torch.log_softmax(logits / 0.7, -1)
    torch.testing.assert_close(lp, ref.gather(-1, labels[..., None]).squeeze(-1))
    torch.testing.assert_close(ent, -(ref.exp() * ref).sum(-1))


def test_advantages_are_eq_9_with_sentence_diversity_on_r_i():
    """Models 3-4: diversity joins r_i before the group normalisation; RELATE: alpha * r_token is
    added per token. Checked against eq. 8-9 written out by hand."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from recipe.relate.local_trainer import relate_advantages

    lengths, uids = [3, 1, 4, 2], ["a", "a", "b", "b"]
    r = np.array([1.0, 0.5, 0.2, 0.9])
    diversity = np.array([0.0, -0.3, -0.1, 0.0])
    penalty = np.zeros((4, 5), dtype=np.float32)
    penalty[0, 1], penalty[2, 3] = -0.5, -0.2
    penalty[1, 2] = -9.0  # outside response 1 (length 1): must not count
    credit = SimpleNamespace(sentence_diversity=diversity, token_penalty=penalty)
    algo = OmegaConf.create({"norm_adv_by_std_in_grpo": True})
    scores, adv, share = relate_advantages(credit, r, lengths, uids, width=5, alpha=2.0,
                                           sentence_estimator="grpo", algorithm=algo)
    total = torch.tensor(r + diversity, dtype=torch.float32)
    mask = (torch.arange(5)[None, :] < torch.tensor(lengths)[:, None]).float()
    expected = torch.zeros(4, 5)
    for group in ([0, 1], [2, 3]):
        g = total[group]
        z = (g - g.mean()) / (g.std() + 1e-6)
        for k, i in enumerate(group):
            expected[i] = z[k] * mask[i]
    expected += 2.0 * torch.from_numpy(penalty) * mask
    torch.testing.assert_close(adv, expected, rtol=1e-5, atol=1e-6)
    assert scores[1, 0] == pytest.approx(0.2, abs=1e-6) and scores[2, 3] == pytest.approx(0.1, abs=1e-6)
    assert scores.sum() == pytest.approx(float(total.sum()), abs=1e-5)
    assert 0 < share < 1


# ---- config, sampler, atomic writes ---------------------------------------------------------------------


def test_local_config_is_the_verl_config_plus_local():
    from omegaconf import OmegaConf

    from recipe.relate.local_trainer import check_supported, compose_config

    local = compose_config(["relate.credit.alpha=0.5"])
    from hydra import compose, initialize_config_dir

    from recipe.relate.local_trainer import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        verl_cfg = compose(config_name="relate_trainer", overrides=["relate.credit.alpha=0.5"])
    # The relate section and the algorithm are the verl run's, unchanged.
    assert OmegaConf.to_container(local.relate) == OmegaConf.to_container(verl_cfg.relate)
    assert OmegaConf.to_container(local.algorithm) == OmegaConf.to_container(verl_cfg.algorithm)
    assert local.actor_rollout_ref.actor.kl_loss_type == verl_cfg.actor_rollout_ref.actor.kl_loss_type
    assert "local" in local and "local" not in verl_cfg
    assert local.data.train_batch_size == 4 and local.actor_rollout_ref.rollout.n == 4
    check_supported(local)
    with pytest.raises(ValueError, match="use_kl_in_reward"):
        check_supported(compose_config(["algorithm.use_kl_in_reward=true"]))
    with pytest.raises(ValueError, match="optim.clip_grad"):
        check_supported(compose_config(["actor_rollout_ref.actor.grad_clip=0.5"]))
    with pytest.raises(Exception, match="alpah"):
        compose_config(["relate.credit.alpah=2"])


def test_cli_prints_the_composed_config(capsys):
    import yaml

    from recipe.relate.local_trainer import main

    main(["--cfg", "relate.preset=model2", "local.max_steps=7"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["relate"]["preset"] == "model2" and printed["local"]["max_steps"] == 7
    assert printed["local"]["output_dir"] == "outputs/local/model2"
    assert printed["algorithm"]["adv_estimator"] == "relate"


def test_cli_help_names_the_config_and_the_main_keys(capsys):
    from recipe.relate.local_trainer import main

    main(["--help"])
    out = capsys.readouterr().out
    assert "relate_local.yaml" in out
    for key in ("relate.preset", "relate.ctcvr_model_dir", "lora_rank", "local.max_steps", "metrics.csv"):
        assert key in out, key


def test_prompt_sampler_resumes_exactly():
    from recipe.relate.local_trainer import PromptSampler

    a = PromptSampler(10, 3, shuffle=True, seed=7)
    batches = [a.next_batch() for _ in range(7)]
    assert all(len(b) == 3 for b in batches)
    assert sorted(sum(batches[:3], [])) == sorted(set(sum(batches[:3], [])))  # no repeat inside an epoch
    b = PromptSampler(10, 3, shuffle=True, seed=7)
    for _ in range(4):
        b.next_batch()
    c = PromptSampler(10, 3, shuffle=True, seed=7)
    c.load_state_dict(b.state_dict())
    assert [c.next_batch() for _ in range(3)] == batches[4:]
    assert PromptSampler(10, 3, shuffle=False, seed=0).next_batch() == [0, 1, 2]
    with pytest.raises(ValueError):
        PromptSampler(2, 3, shuffle=False, seed=0)


def test_interrupted_checkpoint_is_never_picked(tmp_path):
    from recipe.relate.local_trainer import STEP_PREFIX, latest_checkpoint, write_atomically

    root = tmp_path / "checkpoints"
    write_atomically(root / f"{STEP_PREFIX}1", lambda d: (d / "x").write_text("1"))

    def dies(d: Path) -> None:
        (d / "x").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(root / f"{STEP_PREFIX}2", dies)
    (root / f"{STEP_PREFIX}3").mkdir()  # a folder without the completion marker
    step, path = latest_checkpoint(tmp_path)
    assert step == 1 and (path / "x").read_text() == "1"


# ---- real local steps -------------------------------------------------------------------------------------

REQUIRED_COLUMNS = [
    "critic/score/mean", "relate/reward/length", "relate/reward/format", "relate/g_high_size",
    "relate/penalised_tokens/blacklist", "relate/penalised_tokens/diversity", "actor/kl_loss", "actor/pg_clipfrac",
    "actor/entropy", "actor/pg_loss", "actor/grad_norm", "response_length/mean", "timing_s/step",
]


def test_three_steps_then_exact_resume(tiny_policy, dataset_dir, tmp_path):
    from recipe.relate.local_trainer import CHECKPOINT_SUBDIR, METRICS_CSV, checkpoint_dirs, read_metrics_csv

    full_dir, split_dir = tmp_path / "full", tmp_path / "split"
    full = run_local(*overrides(tiny_policy, dataset_dir, full_dir, "local.val_every=2", "local.export_final=true"))
    assert [int(m["step"]) for m in full] == [1, 2, 3]
    for m in full:
        for key in REQUIRED_COLUMNS:
            assert key in m and math.isfinite(m[key]), key
    # The steps train: rewards differ inside the batch, gradients flow, the weights move.
    assert any(m["critic/score/max"] > m["critic/score/min"] for m in full)
    assert all(m["actor/grad_norm"] > 0 for m in full)
    assert any(m["actor/kl_loss"] > 0 for m in full[1:])
    initial, trained = load_weights(tiny_policy), load_weights(full_dir / CHECKPOINT_SUBDIR / "global_step_3" / "actor")
    assert any(not torch.equal(initial[k], trained[k]) for k in initial)
    # Outputs: CSV with val/ columns on validation steps, TensorBoard, complete checkpoints, final model.
    rows = read_metrics_csv(full_dir / METRICS_CSV)
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert "val/score/mean" in rows[1] and "val/score/mean" not in rows[0] and "val/reward/format" in rows[2]
    assert list((full_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert [s for s, _ in checkpoint_dirs(full_dir)] == [2, 3]  # every 2 steps and the last
    assert (full_dir / "final" / "config.json").exists()

    # Run 2 steps, stop; leave debris of an interrupted save; resume for step 3.
    first = run_local(*overrides(tiny_policy, dataset_dir, split_dir, "local.max_steps=2"))
    for a, b in zip(full[:2], first):
        assert_same_metrics(a, b)
    ckpts = split_dir / CHECKPOINT_SUBDIR
    (ckpts / ".tmp-global_step_3-999").mkdir()
    (ckpts / ".tmp-global_step_3-999" / "trainer_state.pt").write_bytes(b"half a file")
    (ckpts / "global_step_9").mkdir()  # no completion marker: never picked
    with (split_dir / METRICS_CSV).open("a", encoding="utf-8") as f:  # a killed run logged step 3, never saved it
        f.write("3" + ",-1.0" * (len(read_metrics_csv(split_dir / METRICS_CSV)[0]) - 1) + "\n")
    resumed = run_local(*overrides(tiny_policy, dataset_dir, split_dir))
    assert [int(m["step"]) for m in resumed] == [3]
    assert_same_metrics(full[2], resumed[0])
    a, b = load_weights(full_dir / CHECKPOINT_SUBDIR / "global_step_3" / "actor"), load_weights(ckpts / "global_step_3" / "actor")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    csv_rows = read_metrics_csv(split_dir / METRICS_CSV)
    assert [int(r["step"]) for r in csv_rows] == [1, 2, 3]
    assert csv_rows[2]["critic/score/mean"] == pytest.approx(full[2]["critic/score/mean"], abs=0)
    assert not (ckpts / ".tmp-global_step_3-999").exists()


def test_lora_trains_adapter_only_and_resumes(tiny_policy, dataset_dir, tmp_path):
    from recipe.relate.local_trainer import CHECKPOINT_SUBDIR

    lora = ["actor_rollout_ref.model.lora_rank=4", "actor_rollout_ref.model.lora_alpha=8", "local.max_steps=2",
            "local.val_every=0", "actor_rollout_ref.actor.optim.lr=1e-2"]
    full = run_local(*overrides(tiny_policy, dataset_dir, tmp_path / "a", *lora, "local.export_final=true"))
    run_local(*overrides(tiny_policy, dataset_dir, tmp_path / "b", *lora, "local.max_steps=1"))
    resumed = run_local(*overrides(tiny_policy, dataset_dir, tmp_path / "b", *lora))
    assert_same_metrics(full[1], resumed[0])
    adapter_a = load_weights(tmp_path / "a" / CHECKPOINT_SUBDIR / "global_step_2" / "actor")
    adapter_b = load_weights(tmp_path / "b" / CHECKPOINT_SUBDIR / "global_step_2" / "actor")
    assert adapter_a and all("lora_" in k for k in adapter_a)  # the checkpoint is the adapter
    assert all(torch.equal(adapter_a[k], adapter_b[k]) for k in adapter_a)
    assert any(v.abs().sum() > 0 for k, v in adapter_a.items() if "lora_B" in k)  # B left its zero init
    # The KL reference is the base model (adapter disabled): identical to the policy before the
    # first update, so the first step's first mini-batch has KL 0 and the metrics stay finite.
    assert all(math.isfinite(m["actor/kl_loss"]) for m in full)
    merged = load_weights(tmp_path / "a" / "final")
    assert not any("lora_" in k for k in merged)


def test_shared_prompt_prefix_trains_as_the_plain_layout(tiny_policy, dataset_dir, tmp_path):
    """local.share_prompt_prefix (default true) against false: the same samples and rewards, and the
    same losses, gradient norms and KL to float rounding, over two steps (the second one starts from
    the weights the first update wrote, so a wrong gradient would show there). G=3 with micro-batches
    of 2 cuts groups, and the LoRA run covers the adapter-disabled reference pass."""
    sizes = ["actor_rollout_ref.rollout.n=3", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
             "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4",
             "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4", "local.max_steps=2"]
    for extra in ([], ["actor_rollout_ref.model.lora_rank=4", "actor_rollout_ref.actor.optim.lr=1e-2"]):
        tag = "lora" if extra else "full"
        plain, shared = (run_local(*overrides(tiny_policy, dataset_dir, tmp_path / f"{tag}-{share}", *sizes, *extra,
                                              f"local.share_prompt_prefix={share}"))
                         for share in ("false", "true"))
        for a, b in zip(plain, shared):
            for key in ("critic/score/mean", "response_length/mean", "critic/advantages/max"):
                assert a[key] == b[key], (tag, key)
            for key in ("actor/pg_loss", "actor/kl_loss", "actor/grad_norm", "actor/entropy"):
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-7), (tag, key)
        assert plain[1]["actor/kl_loss"] > 0


# ---- guards -------------------------------------------------------------------------------------------------


def test_nan_reward_stops_with_the_record_id(tiny_policy, dataset_dir, tmp_path, monkeypatch):
    from recipe.relate.local_trainer import NonFiniteError
    from recipe.relate.scoring import SentenceScorer

    original, seen = SentenceScorer.finish, {}

    def finish(self, records, texts, *args, **kwargs):
        out = original(self, records, texts, *args, **kwargs)
        seen["id"] = records[3].id
        out[3] = (float("nan"), out[3][1])
        return out

    monkeypatch.setattr(SentenceScorer, "finish", finish)
    with pytest.raises(NonFiniteError) as err:
        run_local(*overrides(tiny_policy, dataset_dir, tmp_path, "local.max_steps=1"))
    assert f"record {seen['id']} (response 3)" in str(err.value) and "sentence reward" in str(err.value)
    assert not (tmp_path / "checkpoints").exists()


def test_nan_loss_stops_with_the_record_id(tiny_policy, dataset_dir, tmp_path, monkeypatch):
    from recipe.relate.local_trainer import LocalTrainer, NonFiniteError

    original_ref, original_score, seen = LocalTrainer.ref_log_probs, LocalTrainer.score, {}

    def score(self, records, *args, **kwargs):
        seen["ids"] = [r.id for r in records]
        return original_score(self, records, *args, **kwargs)

    def ref_log_probs(self, prompts, responses, width):
        out = original_ref(self, prompts, responses, width)
        out[2, 0] = float("nan")
        return out

    monkeypatch.setattr(LocalTrainer, "score", score)
    monkeypatch.setattr(LocalTrainer, "ref_log_probs", ref_log_probs)
    with pytest.raises(NonFiniteError) as err:
        run_local(*overrides(tiny_policy, dataset_dir, tmp_path, "local.max_steps=1"))
    message = str(err.value)
    assert "actor loss" in message and f"record {seen['ids'][2]} (response 2)" in message
    assert "(response 3)" not in message


def test_empty_response_scores_and_trains(tiny_policy, dataset_dir, tmp_path, monkeypatch, tokenizer):
    from recipe.relate import local_rollout

    original, eos = local_rollout.generate_responses, tokenizer.convert_tokens_to_ids("<|im_end|>")

    def generate(*args, **kwargs):
        out = original(*args, **kwargs)
        out[0][0] = [eos]  # immediate EOS
        return out

    monkeypatch.setattr(local_rollout, "generate_responses", generate)
    history = run_local(*overrides(tiny_policy, dataset_dir, tmp_path, "local.max_steps=1", "local.val_every=1"))
    m = history[0]
    assert m["response_length/min"] == 1
    for key in REQUIRED_COLUMNS + ["val/score/mean"]:
        assert math.isfinite(m[key]), key
    assert (tmp_path / "checkpoints" / "global_step_1").is_dir()


# ---- the full RELATE preset with the pipeline's CTCVR model --------------------------------------------------


def test_relate_preset_with_ctcvr_model(tiny_policy, pipeline_dir, dataset_dir, tmp_path):
    data = pipeline_dir / "dataset"
    history = run_local(*overrides(tiny_policy, data, tmp_path, f"data.val_files={dataset_dir / 'val.parquet'}",
                                   "relate.preset=relate",
                                   f"relate.ctcvr_model_dir={pipeline_dir / 'ctcvr_model'}", "local.max_steps=2",
                                   "local.val_every=2", "local.checkpoint_every=0"))
    for m in history:
        for key in ["relate/reward/ctcvr", "relate/reward/relevance", "relate/reward/correctness",
                    "relate/reward/risk_blacklist", "relate/token_advantage_share", "val/reward/ctcvr", "critic/score/mean"]:
            if key.startswith("val/") and m is history[0]:
                continue
            assert key in m and math.isfinite(m[key]), key
        assert 0 < m["relate/reward/ctcvr"] < 1
    assert np.isfinite([m["actor/pg_loss"] for m in history]).all()
