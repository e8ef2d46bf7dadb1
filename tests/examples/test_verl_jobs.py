"""examples.verl_jobs: verl's trainers as child processes (the demo's training stages).

The full runs (SFT and RELATE through verl on the CPU backend) are in tests/examples/test_demo_smoke.py and
tests/verl_cpu/test_verl_cpu_loop.py; here: what decides a rerun, where the trained policy is found, and
that a failing verl job is an error that shows its log.
"""

from __future__ import annotations

import os

import pytest

from examples.verl_jobs import TRACKER, Job, JobError, fingerprint, newest_policy, run_job


def test_argv_runs_verl_entry_points_on_the_cpu_backend(tmp_path):
    sft = Job("sft", tmp_path / "sft", ("trainer.total_training_steps=2",)).argv()
    assert sft[1:] [:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "recipe.relate.main_sft"]
    assert "sft_backend=cpu" in sft and f"trainer.default_local_dir={tmp_path / 'sft' / 'checkpoints'}" in sft
    assert sft[-1] == "trainer.total_training_steps=2"  # the caller's overrides win (last)
    relate = Job("relate", tmp_path / "rl", ()).argv()
    assert relate[1:4] == ["-m", "recipe.relate.main_relate", "backend=cpu"]
    assert any(a.endswith(f"VERL_FILE_LOGGER_PATH={tmp_path / 'rl' / 'metrics.jsonl'}") for a in relate)
    with pytest.raises(ValueError, match="unknown job kind 'ppo'"):
        Job("ppo", tmp_path, ()).argv()


def test_a_jobs_threads_reach_every_verl_process_unless_the_user_set_them(tmp_path, monkeypatch):
    from verl_cpu.env import THREADS_ENV

    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert THREADS_ENV not in Job("relate", tmp_path, ()).env()
    assert Job("relate", tmp_path, (), threads=1).env()[THREADS_ENV] == "1"
    monkeypatch.setenv(THREADS_ENV, "3")
    assert Job("relate", tmp_path, (), threads=1).env()[THREADS_ENV] == "3"


def test_fingerprint_is_the_stage_rule_of_the_job_argv_and_inputs(tmp_path):
    """A job's job.json and its training stage's marker hold one and the same fingerprint."""
    from examples.stages import Stage

    data = tmp_path / "train.parquet"
    data.write_bytes(b"abc")
    job = Job("relate", tmp_path / "run", ("a=1",))
    stage = Stage("train", lambda: None, inputs=[data], outputs=[], params={"argv": job.argv()[1:]})
    assert fingerprint(job, [data]) == stage.fingerprint()


def test_fingerprint_changes_with_the_overrides_and_the_inputs(tmp_path):
    data = tmp_path / "train.parquet"
    data.write_bytes(b"abc")
    job = Job("sft", tmp_path / "run", ("a=1",))
    first = fingerprint(job, [data])
    assert fingerprint(job, [data]) == first
    assert fingerprint(Job("sft", tmp_path / "run", ("a=2",)), [data]) != first
    data.write_bytes(b"abcd")
    assert fingerprint(job, [data]) != first
    stat = data.stat()
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert fingerprint(job, [data])["inputs"] != first["inputs"]


def test_newest_policy_follows_verls_tracker_file(tmp_path):
    job = Job("relate", tmp_path / "run", ())
    with pytest.raises(JobError, match="saved no checkpoint"):
        newest_policy(job)
    for step in (1, 2):
        hf = job.checkpoints / f"global_step_{step}" / "actor" / "huggingface"
        hf.mkdir(parents=True)
        (hf / "config.json").write_text("{}")
    (job.checkpoints / TRACKER).write_text("1\n")  # verl says step 1, although step 2 exists
    assert newest_policy(job) == job.checkpoints / "global_step_1" / "actor" / "huggingface"
    (job.checkpoints / TRACKER).write_text("3")
    with pytest.raises(JobError, match="no transformers folder"):
        newest_policy(job)


def test_a_failing_verl_job_raises_with_its_log_tail(tmp_path):
    """A real child: verl's Hydra config refuses an unknown key; the error names the log and quotes it."""
    job = Job("relate", tmp_path / "run", ("no_such_section.no_such_key=1",))
    with pytest.raises(JobError) as err:
        run_job(job, [], echo=False)
    message = str(err.value)
    assert "verl relate job failed" in message and str(job.log) in message and "no_such_section" in message
    assert "no_such_section" in job.log.read_text() and not job.final.exists()


def test_an_interrupted_job_resumes_and_a_changed_one_starts_over(tmp_path, monkeypatch, capsys):
    """run_job's rule around verl's own resume: the same job.json keeps the checkpoints, another empties the folder."""
    import json

    import examples.verl_jobs as vj

    calls = []

    def checkpoint(job, step):
        hf = job.checkpoints / f"global_step_{step}" / "huggingface"
        hf.mkdir(parents=True, exist_ok=True)
        (hf / "config.json").write_text(json.dumps({"step": step}))
        (job.checkpoints / TRACKER).write_text(str(step))

    def interrupted(job, echo=True):
        calls.append(("interrupted", job.checkpoints.is_dir()))
        checkpoint(job, 1)
        raise KeyboardInterrupt

    def finishing(job, echo=True):
        calls.append(("finishing", job.checkpoints.is_dir()))
        checkpoint(job, 2)
        return 0

    data = tmp_path / "train.parquet"
    data.write_text("rows")
    job = Job("sft", tmp_path / "run", ("trainer.total_training_steps=2",))
    monkeypatch.setattr(vj, "stream", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_job(job, [data])
    monkeypatch.setattr(vj, "stream", finishing)
    final = run_job(job, [data])  # the same job: verl finds step 1 and goes on
    assert "resuming the interrupted run" in capsys.readouterr().out
    assert calls == [("interrupted", False), ("finishing", True)]
    assert json.loads((final / "config.json").read_text()) == {"step": 2} and not job.checkpoints.exists()

    (job.run_dir / "stale.txt").write_text("from the old run")
    changed = Job("sft", tmp_path / "run", ("trainer.total_training_steps=3",))
    run_job(changed, [data])
    assert not (job.run_dir / "stale.txt").exists()
    assert "trainer.total_training_steps=3" in json.loads((job.run_dir / "job.json").read_text())["params"]["argv"]
