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
