"""Shared fixtures: real offline assets, converted once per machine and cached."""

from __future__ import annotations

import os

import pytest

# Tests never reach a model hub; fail fast instead of hanging on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tokenizer_dir():
    """Folder of SmolLM2-135M-Instruct's real tokenizer (byte-level BPE, ChatML template)."""
    from relate_common.assets import smollm2_tokenizer_dir

    return smollm2_tokenizer_dir()


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    """The real SmolLM2 tokenizer: fast, with offsets, handles Chinese as bytes."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer_dir):
    """A 2-layer random Llama (vocab = the real tokenizer's, grouped-query attention, rotary
    positions) saved with the SmolLM2 tokenizer: attention and positions matter in its outputs."""
    from transformers import AutoTokenizer

    from testbed.tiny_policy import build_random_tiny_llama

    return build_random_tiny_llama(AutoTokenizer.from_pretrained(tokenizer_dir), tmp_path_factory.mktemp("tiny_random_llama"))


@pytest.fixture(scope="session")
def sharp_model(tiny_model_dir):
    """The tiny random Llama with unit-scale weights (sdpa attention), so that attention and rotary
    positions change its outputs: a wrong position or mask shows in log-probs and samples."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) / (1.0 if "embed" in name else p.shape[1] ** 0.5))
    return model


@pytest.fixture(scope="session")
def pipeline_dir(tmp_path_factory):
    """The real data pipeline at small scale on the bundled records: RL dataset, 20k simulated
    impressions, CTCVR tables and a CTCVR model trained for a few epochs (~30 s)."""
    from ctcvr_model import train as ctcvr_train
    from data_prep import build_ctcvr_table, build_dataset, simulate_logs

    root = tmp_path_factory.mktemp("pipeline")
    build_dataset.main(["--output-dir", str(root / "dataset")])
    simulate_logs.main(["--output", str(root / "logs.parquet"), "--impressions", "20000", "--seed", "0"])
    build_ctcvr_table.main(["--logs", str(root / "logs.parquet"), "--output-dir", str(root / "tables")])
    ctcvr_train.main(["--table", str(root / "tables" / "train.parquet"), "--val", str(root / "tables" / "val.parquet"),
                      "--output-dir", str(root / "ctcvr_model"), "--epochs", "3", "--quiet"])
    return root


@pytest.fixture(scope="session")
def gpu_run_inputs(tmp_path_factory, pipeline_dir, tiny_model_dir):
    """Every input of the GPU scripts, real and small, as their environment variables: DATA_DIR (the RL parquet
    of data_prep/build_dataset.py), CTCVR_MODEL_DIR (a trained ctcvr_model folder) and SFT_RUN_DIR laid out as
    verl's SFT trainer writes it (checkpoints/global_step_3/huggingface, a transformers folder: the tiny random
    Llama; checkpoints/latest_checkpointed_iteration.txt = 3), from which run_relate_qwen3_8b.sh takes MODEL_PATH."""
    import shutil

    sft = tmp_path_factory.mktemp("sft_run")
    shutil.copytree(tiny_model_dir, sft / "checkpoints" / "global_step_3" / "huggingface")
    (sft / "checkpoints" / "latest_checkpointed_iteration.txt").write_text("3")
    return {"DATA_DIR": str(pipeline_dir / "dataset"), "CTCVR_MODEL_DIR": str(pipeline_dir / "ctcvr_model"),
            "SFT_RUN_DIR": str(sft)}


@pytest.fixture(scope="session")
def demo_smoke_dir(tmp_path_factory):
    """``make demo-smoke`` into a temporary folder (every stage at its smoke size): the demo's smoke tests
    read it, and the CPU ablation's smoke run starts from its SFT'd testbed (``--base-dir``), as the full
    ablation starts from ``make demo``'s."""
    from examples import demo

    out = tmp_path_factory.mktemp("demo_smoke")
    assert demo.main(["--smoke", "--output-dir", str(out)]) == 0
    return out
