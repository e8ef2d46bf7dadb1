"""verl's own SFT and RL trainers as child processes on the CPU backend (package ``verl_cpu``).

What the demo and the CPU ablation run; the same entry points as ``examples/run_sft_cpu.sh`` and
``examples/run_relate_cpu.sh``:

* ``sft``: ``torchrun --standalone --nproc_per_node=1 -m recipe.relate.main_sft sft_backend=cpu``
  (verl's ``SFTTrainer``); its transformers folder is ``global_step_N/huggingface``.
* ``relate``: ``python -m recipe.relate.main_relate backend=cpu`` (verl's ``RayPPOTrainer`` with
  RELATE's estimator and reward manager); its folder is ``global_step_N/actor/huggingface``.

A job owns one folder::

    RUN_DIR/job.json        what the run depends on (examples.stages.fingerprint: argv + input stamps)
    RUN_DIR/job.log         everything the child printed
    RUN_DIR/metrics.jsonl   verl's FileLogger: one {"step": n, "data": {...}} line per step
    RUN_DIR/checkpoints/    verl's checkpoints while the job runs (removed once it finished)
    RUN_DIR/final/          the trained policy: a transformers folder, what later stages read

An interrupted job of the same ``job.json`` resumes from verl's newest checkpoint (verl's own
``trainer.resume_mode: auto``); a job whose argv or inputs changed starts over in an emptied folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import examples.stages as stages
from relate_common.jsonio import write_text_atomic
from verl_cpu.env import THREADS_ENV, cpu_env

REPO = Path(__file__).resolve().parents[1]
KINDS = ("sft", "relate")
# Where each trainer puts the transformers folder inside global_step_N (checkpoint.save_contents
# holds hf_model in recipe/relate/config/relate_sft.yaml and config/backend/cpu.yaml).
HF_SUBDIR = {"sft": Path("huggingface"), "relate": Path("actor") / "huggingface"}
# verl's checkpoint managers write the newest step here (verl/utils/checkpoint/checkpoint_manager.py).
TRACKER = "latest_checkpointed_iteration.txt"
# Lines echoed while a job runs: verl's console logger's step lines and errors, also when a Ray
# actor prints them ("(TaskRunner pid=123) step:1 - ...").
PROGRESS = re.compile(r"(?:^|\)\s)(step:\d+ -|Final validation metrics|Traceback|\w*Error:)")
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Ray colours its actor prefixes


class JobError(RuntimeError):
    """A verl job exited non-zero or left no trained policy; the message ends with its log's tail."""


@dataclass(frozen=True)
class Job:
    """One run of a verl trainer: ``kind`` in :data:`KINDS`, its folder and its Hydra overrides."""

    kind: str
    run_dir: Path
    overrides: tuple[str, ...]
    # Torch threads of each of its processes (verl_cpu.threads.THREADS_ENV; None: verl_cpu's own
    # rule, the host's cores). Set when jobs run side by side, so they do not oversubscribe the cores.
    threads: int | None = None

    checkpoints = property(lambda self: self.run_dir / "checkpoints")
    metrics = property(lambda self: self.run_dir / "metrics.jsonl")
    log = property(lambda self: self.run_dir / "job.log")
    final = property(lambda self: self.run_dir / "final")

    def argv(self) -> list[str]:
        if self.kind == "sft":
            head = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                    "-m", "recipe.relate.main_sft", "sft_backend=cpu"]
        elif self.kind == "relate":
            # Ray workers get the FileLogger path through the runtime env (as run_relate_cpu.sh does).
            head = ["-m", "recipe.relate.main_relate", "backend=cpu",
                    f"++ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH={self.metrics}"]
        else:
            raise ValueError(f"unknown job kind {self.kind!r}; known: {', '.join(KINDS)}")
        return [sys.executable, *head, f"trainer.default_local_dir={self.checkpoints}", *self.overrides]

    def env(self) -> dict[str, str]:
        env = {**os.environ, "VERL_FILE_LOGGER_PATH": str(self.metrics), "HF_HUB_OFFLINE": "1"}
        if self.threads is not None:
            env.setdefault(THREADS_ENV, str(self.threads))  # a user's own setting wins
        return cpu_env(env)


def fingerprint(job: Job, inputs: list[Path]) -> dict:
    """What the job's result depends on, by the examples' one cache rule (``examples.stages.fingerprint``):
    its argv (the stage's parameters) and the size + mtime of each input file."""
    return stages.fingerprint({"argv": job.argv()[1:]}, inputs)


def newest_policy(job: Job) -> Path:
    """The transformers folder of verl's newest checkpoint of ``job`` (JobError if there is none)."""
    tracker = job.checkpoints / TRACKER
    if not tracker.is_file():
        raise JobError(f"{job.checkpoints}: no {TRACKER}: verl saved no checkpoint (is save_freq > total steps?)")
    path = job.checkpoints / f"global_step_{int(tracker.read_text().strip())}" / HF_SUBDIR[job.kind]
    if not (path / "config.json").is_file():
        raise JobError(f"{path}: no transformers folder (checkpoint.save_contents must hold hf_model)")
    return path


def stream(job: Job, echo: bool = True) -> int:
    """Run the child with its output in ``job.log``; echo the step lines, prefixed with the run
    folder's name (jobs may run side by side); return its exit code."""
    tail: deque[str] = deque(maxlen=60)
    with open(job.log, "a", encoding="utf-8") as log:
        proc = subprocess.Popen(job.argv(), cwd=REPO, env=job.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", bufsize=1)
        try:
            for line in proc.stdout:
                log.write(line)
                tail.append(line)
                plain = ANSI.sub("", line)
                if echo and PROGRESS.search(plain):
                    print(f"[{job.run_dir.name}] {plain.strip()[:240]}", flush=True)
            rc = proc.wait()
        except BaseException:  # Ctrl-C: stop the whole child (Ray starts more processes under it)
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    if rc != 0:
        raise JobError(f"verl {job.kind} job failed (exit {rc}); log: {job.log}\n--- last lines ---\n{''.join(tail)}")
    return rc


def run_job(job: Job, inputs: list[Path], echo: bool = True) -> Path:
    """Run ``job`` to its end (resuming the same job's checkpoints); return ``job.final``.

    The finished policy is copied out of verl's newest checkpoint into ``final/`` and the
    checkpoints (model + optimizer state: ~1.6 GB for SmolLM2) are removed.
    """
    stamp = fingerprint(job, inputs)
    record = job.run_dir / "job.json"
    previous = None
    if record.is_file():
        try:
            previous = json.loads(record.read_text(encoding="utf-8"))
        except ValueError:
            previous = None
    if job.run_dir.exists() and previous != stamp:
        shutil.rmtree(job.run_dir)
    elif job.checkpoints.is_dir():
        print(f"[{job.kind}] resuming the interrupted run in {job.run_dir}", flush=True)
    job.run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(record, json.dumps(stamp, indent=1) + "\n")
    shutil.rmtree(job.final, ignore_errors=True)
    stream(job, echo)
    source = newest_policy(job)
    tmp = job.final.with_name(f"final.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    os.replace(tmp, job.final)
    shutil.rmtree(job.checkpoints, ignore_errors=True)
    return job.final
