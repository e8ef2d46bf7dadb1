"""verl's own training loop on CPU (package verl_cpu), end to end on the tiny policy.

Three runs of ``main_relate`` share the real pipeline's inputs (``python -m examples.cpu_run
prepare``, what ``examples/run_relate_cpu.sh`` builds): preset ``relate`` for 2 steps with a checkpoint
(through the script itself), a resume of that run to step 3, and preset ``model3`` with the reference
model and KL loss on two FSDP ranks over gloo. Every assertion reads what the run left on disk: verl's
FileLogger metrics (one JSON line per step) and verl's checkpoint folder.

The model3 run needs only the inputs, so it runs in the background beside the other two: a run of
verl's loop on CPU leaves the cores idle much of its time (Ray start-up, actor creation, hand-offs
between the phases of a step), and each run is its own Ray cluster.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from examples.cpu_run import OVERRIDES_FILE, read_metrics
from reward_fns import RewardConfig
from verl_cpu.env import cpu_env

from tests.fixtures import REPO
TIMEOUT_S = 900
# A learning rate 100x the backend's: the tiny policy's probabilities then move by > 1e-3 in one
# step, so a rollout left on stale weights would miss the 1e-4 weight-sync tolerance by far.
TEST_LR = "actor_rollout_ref.actor.optim.lr=1e-3"
# The size of every test run, beside the backend's own: prompts up to 320 SmolLM2 tokens (verl's
# filter_overlong_prompts keeps the 140 English prompts of the 286; the Chinese ones are 500-700
# tokens, and a CPU step costs about its tokens), and no Ray dashboard. Both only save time.
TEST_SIZE = [TEST_LR, "data.max_prompt_length=320", "+ray_kwargs.ray_init.include_dashboard=false"]
SYNC_TOLERANCE = 1e-4  # |log p_rollout - log p_actor| per token of the fixed sequence
# verl's own per-step check (training/rollout_probs_diff_max, probabilities of the sampled tokens,
# batched left-padded decoding vs the actor's forward): float32 noise measured 3e-5..1.2e-4.
SAMPLED_TOLERANCE = 1e-3
FIXED_AD = "\nTitle: Fast local service open today\nDescription: Licensed experts, fixed prices. Book online.<|im_end|>"


def _check(proc: subprocess.CompletedProcess, what: str) -> None:
    assert proc.returncode == 0, f"{what} failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


def main_command(run_dir: Path, metrics: Path, overrides: list[str]) -> tuple[list[str], dict[str, str]]:
    """``python -m recipe.relate.main_relate backend=cpu`` on the inputs of ``run_dir``: (argv, env)."""
    inputs = (run_dir / OVERRIDES_FILE).read_text().split()
    env = cpu_env({**os.environ, "VERL_FILE_LOGGER_PATH": str(metrics), "HF_HUB_OFFLINE": "1"})
    return [sys.executable, "-m", "recipe.relate.main_relate", "backend=cpu", *inputs, *TEST_SIZE, *overrides], env


def run_main(run_dir: Path, metrics: Path, overrides: list[str]) -> subprocess.CompletedProcess:
    cmd, env = main_command(run_dir, metrics, overrides)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


class BackgroundRun:
    """A command started now, its output in a log file (a pipe left unread would block it)."""

    def __init__(self, cmd: list[str], env: dict[str, str], log: Path):
        self.log = log
        with open(log, "w") as out:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)

    def wait(self) -> subprocess.CompletedProcess:
        try:
            self.proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, "", self.log.read_text())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def matches(row: dict, reference: torch.Tensor) -> bool:
    return bool((row["log_probs"] - reference).abs().max() < SYNC_TOLERANCE)


def by_step(metrics: Path) -> dict[int, dict[str, float]]:
    return {row["step"]: row["data"] for row in read_metrics(metrics)}


def fixed_ids() -> list[int]:
    from transformers import AutoTokenizer

    from relate_common.assets import smollm2_tokenizer_dir  # the tiny policy's tokenizer

    return AutoTokenizer.from_pretrained(smollm2_tokenizer_dir())(FIXED_AD).input_ids


def token_log_probs(model_dir: Path) -> torch.Tensor:
    """Per-token log-probability of :data:`FIXED_AD` under the transformers model in ``model_dir``."""
    from transformers import AutoModelForCausalLM

    from verl_cpu.sampling import sequence_log_probs

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return torch.tensor(sequence_log_probs(model, fixed_ids()))


def probe_rows(path: Path) -> list[dict]:
    return [{**row, "log_probs": torch.tensor(row["log_probs"])} for row in read_metrics(path)]


def probe_overrides(probe: Path) -> list[str]:
    """The rollout's weight-sync probe (verl_cpu.rollout): log-probs of FIXED_AD after every sync."""
    ids = ",".join(map(str, fixed_ids()))
    return [f"+actor_rollout_ref.rollout.engine_kwargs.hf.sync_probe_path={probe}",
            f"+actor_rollout_ref.rollout.engine_kwargs.hf.sync_probe_token_ids=[{ids}]"]


IMPRESSIONS = "20000"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """The run folder with the inputs ``run_relate_cpu.sh`` builds (POLICY=tiny), built once."""
    run_dir = tmp_path_factory.mktemp("relate_cpu")
    proc = subprocess.run([sys.executable, "-m", "examples.cpu_run", "prepare", "--run-dir", str(run_dir),
                           "--policy", "tiny", "--impressions", IMPRESSIONS], cwd=REPO, capture_output=True,
                          text=True, timeout=TIMEOUT_S, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    _check(proc, "examples.cpu_run prepare")
    return run_dir


@pytest.fixture(scope="module")
def model3_run(inputs, tmp_path_factory):
    """Preset model3, reference + KL loss, two FSDP ranks over gloo, 2 steps: started in the
    background as soon as the inputs exist; (metrics file, checkpoint folder, run) for its test."""
    out = tmp_path_factory.mktemp("model3_two_ranks")
    metrics = out / "metrics.jsonl"
    cmd, env = main_command(inputs, metrics, ["relate.preset=model3", "trainer.total_training_steps=2",
                                              "trainer.n_gpus_per_node=2", "actor_rollout_ref.actor.use_kl_loss=true",
                                              f"trainer.default_local_dir={out / 'checkpoints'}"])
    run = BackgroundRun(cmd, env, out / "run.log")
    yield metrics, out / "checkpoints", run
    run.stop()


@pytest.fixture(scope="module")
def relate_run(inputs, model3_run) -> Path:
    """``POLICY=tiny bash examples/run_relate_cpu.sh``: preset relate, 2 steps, a checkpoint after each
    (its input stages are up to date and skipped; the model3 run is under way meanwhile)."""
    run_dir = inputs
    env = {**os.environ, "POLICY": "tiny", "PRESET": "relate", "RUN_DIR": str(run_dir), "IMPRESSIONS": IMPRESSIONS,
           "PYTHON": sys.executable}
    args = ["trainer.total_training_steps=2", "trainer.save_freq=1", *TEST_SIZE, *probe_overrides(run_dir / "probe.jsonl")]
    proc = subprocess.run(["bash", "examples/run_relate_cpu.sh", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    _check(proc, "examples/run_relate_cpu.sh")
    return run_dir


def test_relate_trains_through_verls_loop(relate_run):
    steps = by_step(relate_run / "metrics.jsonl")
    assert sorted(steps) == [1, 2]
    components = [c for c in RewardConfig.from_dict({"preset": "relate"}).sentence_components() if c != "risk_judge"]
    for step, m in steps.items():
        # The reward manager ran in verl's reward-loop workers and its per-component scores reached
        # RelateTrainer in the TaskRunner: both registrations resolved in those Ray processes.
        for c in components:
            assert 0.0 <= m[f"relate/reward/{c}"] <= 1.0, (step, c)
        assert m["training/global_step"] == step
    # Token-level credit (eq. 5, 7): with 4 distinct prompts G_high is non-empty in some step.
    assert max(m["relate/penalised_tokens/diversity"] for m in steps.values()) > 0
    assert max(m["relate/token_advantage_share"] for m in steps.values()) > 0
    assert all("actor/kl_loss" in m and "timing_s/ref" in m for m in steps.values())  # reference + KL loss (eq. 6)
    assert all(m["training/rollout_probs_diff_max"] < SAMPLED_TOLERANCE for m in steps.values())


def test_rollout_holds_the_actor_weights_after_each_update(relate_run):
    ckpt = relate_run / "checkpoints"
    initial = token_log_probs(relate_run / "tiny_policy")
    after_step1 = token_log_probs(ckpt / "global_step_1" / "actor" / "huggingface")
    # The actor learned far more than the tolerance, so a stale rollout could not pass.
    assert (after_step1 - initial).abs().max() > 10 * SYNC_TOLERANCE
    rows = probe_rows(relate_run / "probe.jsonl")
    # verl's sync before step 1 replaced the rollout's dummy weights with the policy ...
    assert matches(rows[0], initial)
    # ... and the sync after step 1's update gave the rollout the actor's weights of that update.
    assert any(matches(row, after_step1) for row in rows[1:])


def test_checkpoint_has_trained_weights_and_sync_semantics(relate_run):
    ckpt = relate_run / "checkpoints"
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text().strip() == "2"
    step2 = ckpt / "global_step_2"
    before = token_log_probs(relate_run / "tiny_policy")
    after = token_log_probs(step2 / "actor" / "huggingface")
    assert (after - before).abs().max() > 10 * SYNC_TOLERANCE  # the saved actor is the trained one
    # Sync semantics (trainer_base.py:153,731,1004): the dataloader yields one batch of all 4 prompts
    # per step (an async trainer fetches one prompt at a time) and no TransferQueue dump is saved.
    loader = torch.load(step2 / "data.pt", weights_only=False)
    assert loader["_num_yielded"] == 2 and loader["_sampler_iter_state"]["samples_yielded"] == 8
    assert not (step2 / "transfer_queue").exists()


@pytest.fixture(scope="module")
def resumed_run(relate_run) -> Path:
    """The same run restarted with 3 steps: verl resumes from global_step_2 (resume_mode auto)."""
    metrics = relate_run / "metrics_resumed.jsonl"
    overrides = ["relate.preset=relate", "trainer.total_training_steps=3", "trainer.save_freq=1",
                 *probe_overrides(relate_run / "probe_resumed.jsonl")]
    _check(run_main(relate_run, metrics, overrides), "resume")
    return metrics


def test_resume_continues_from_the_checkpoint(relate_run, resumed_run):
    steps = by_step(resumed_run)
    assert sorted(steps) == [3] and steps[3]["training/global_step"] == 3
    ckpt = relate_run / "checkpoints"
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text().strip() == "3"
    loader = torch.load(ckpt / "global_step_3" / "data.pt", weights_only=False)
    # The dataloader went on where it was: the third batch of the epoch, not the first again.
    assert loader["_num_yielded"] == 3 and loader["_sampler_iter_state"]["samples_yielded"] == 12
    step2 = token_log_probs(ckpt / "global_step_2" / "actor" / "huggingface")
    step3 = token_log_probs(ckpt / "global_step_3" / "actor" / "huggingface")
    assert (step3 - step2).abs().max() > 10 * SYNC_TOLERANCE  # step 3 trained
    # The resumed actor (step 2's weights, not the initial policy) reached the rollout before step 3.
    assert matches(probe_rows(relate_run / "probe_resumed.jsonl")[0], step2)


def test_model3_with_reference_and_kl_on_two_gloo_ranks(model3_run):
    metrics, checkpoints, run = model3_run
    _check(run.wait(), "model3 on 2 ranks")
    steps = by_step(metrics)
    assert sorted(steps) == [1, 2]
    for m in steps.values():
        assert 0.0 <= m["relate/diversity_score/mean"] <= 1.0
        assert m["relate/token_advantage_share"] == 0.0  # model3 has no token-level credit
        assert m["actor/kl_loss"] >= 0.0 and "timing_s/ref" in m
        assert 0.0 <= m["relate/reward/ctcvr"] <= 1.0
    # eq. 4 at sentence level: RelateTrainer added the diversity penalty to the responses' rewards.
    assert min(m["relate/diversity_penalty/mean"] for m in steps.values()) < 0
    assert all(m["training/rollout_probs_diff_max"] < SAMPLED_TOLERANCE for m in steps.values())
    actor = checkpoints / "global_step_2" / "actor"
    assert sorted(p.name for p in actor.glob("model_world_size_2_rank_*.pt")) == \
        ["model_world_size_2_rank_0.pt", "model_world_size_2_rank_1.pt"]
