"""What several test files share (never imported from a test file: a test module imports only this and
conftest's fixtures): record files in each supported format, the repository root, a fake sentence
encoder, verl reward-loop inputs, the run scripts' environment."""

from __future__ import annotations

import ast
import csv
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def record(i: int = 1, **overrides: Any) -> dict[str, Any]:
    """A valid English record; overrides replace or remove (value None -> key dropped) fields."""
    row = {
        "id": f"r{i}",
        "query": f"emergency plumber near me {i}",
        "bidword": "emergency plumber",
        "selling_points": ["60-minute response", "upfront pricing", "licensed since 2009"],
        "industry": "home_services",
        "title": "Emergency Plumber in 60 Minutes",
        "description": "Licensed plumbers since 2009 with upfront pricing. Call now for a 60-minute response.",
    }
    for key, value in overrides.items():
        if value is None:
            row.pop(key, None)
        else:
            row[key] = value
    return row


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``, relative path -> bytes: two runs into one folder compare equal."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def as_json(value: Any) -> str:
    """``value`` as sorted JSON (NaN written as NaN), so results holding NaN compare equal."""
    return json.dumps(value, sort_keys=True, default=str)


def relate_config(preset: str, tokenizer_dir, ctcvr_dir=None, prepare: bool = True, extra: tuple[str, ...] = ()):
    from hydra import compose, initialize_config_dir

    from recipe.relate.main_relate import prepare_config

    overrides = [f"relate.preset={preset}", f"actor_rollout_ref.model.path={tokenizer_dir}", *extra]
    if ctcvr_dir is not None:
        overrides.append(f"relate.ctcvr_model_dir={ctcvr_dir}")
    with initialize_config_dir(config_dir=str(REPO / "recipe/relate/config"), version_base=None):
        config = compose(config_name="relate_trainer", overrides=overrides)
    return prepare_config(config, inputs=False) if prepare else config  # the data files are read by the tests


def data_proto(item, response_text: str, tokenizer, response_width: int = 160):
    """One sample as verl's reward loop hands it to run_single: prompts | responses, attention mask."""
    import torch
    from verl import DataProto

    prompt_ids = tokenizer.apply_chat_template(item["raw_prompt"], add_generation_prompt=True, tokenize=True)
    if hasattr(prompt_ids, "keys"):
        prompt_ids = prompt_ids["input_ids"]
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    response_ids = tokenizer(response_text, add_special_tokens=False)["input_ids"] + [eos]
    assert len(response_ids) <= response_width
    pad = tokenizer.pad_token_id or 0
    responses = torch.full((1, response_width), pad, dtype=torch.long)
    responses[0, : len(response_ids)] = torch.tensor(response_ids)
    prompts = torch.tensor([prompt_ids])
    attention = torch.cat([torch.ones_like(prompts), (torch.arange(response_width) < len(response_ids)).long()[None]], dim=1)
    non_tensors = {k: np.array([item[k]], dtype=object) for k in ("reward_model", "extra_info", "data_source")}
    return DataProto.from_dict(tensors={"prompts": prompts, "responses": responses, "attention_mask": attention},
                               non_tensors=non_tensors)


class FakeEncoder:
    name, dim = "fake", 32

    def encode(self, texts, batch_size=64):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for ch in t:
                out[i, ord(ch) % self.dim] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


SCRIPTS = {
    "paper": "examples/run_relate_qwen3_8b.sh",
    "model1": "examples/ablation/run_model1.sh",
    "model2": "examples/ablation/run_model2.sh",
    "model3": "examples/ablation/run_model3.sh",
    "model4": "examples/ablation/run_model4.sh",
    "relate": "examples/ablation/run_relate.sh",
}


JUDGE_ENV = ("RELATE_JUDGE_BASE_URL", "RELATE_JUDGE_MODEL", "RELATE_JUDGE_API_KEY")


SCRIPT_ENV = ("PRESET", "MODEL_PATH", "DATA_DIR", "CTCVR_MODEL_DIR", "CKPT_DIR", "SFT_RUN_DIR", "LOG_DIR",
              "RELEVANCE_CACHE_DIR", "REWARD_THREADS", "REWARD_WORKERS_PER_NODE", "NNODES", "NGPUS_PER_NODE",
              "RECORDS", "LOGS", "WORK", "BASE_MODEL", "SFT_DATA", "RUN_DIR", "NGPUS")


def script_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (*SCRIPT_ENV, *JUDGE_ENV)}
    env.update(PYTHON=sys.executable, DRY_RUN="1", HF_HUB_OFFLINE="1", **extra)
    return env


def import_graph(packages: tuple[str, ...]) -> dict[str, set[str]]:
    """{dotted module: the modules of ``packages`` it imports}, read from the sources with ``ast``: every
    import statement, function bodies and TYPE_CHECKING blocks included (a lazy import hides a cycle, it
    does not remove it); ``from pkg import sub`` counts as importing the submodule when there is one."""
    files = {}
    for pkg in packages:
        for path in sorted((REPO / pkg).glob("*.py")):
            files[pkg if path.stem == "__init__" else f"{pkg}.{path.stem}"] = path
    graph = {}
    for name, path in files.items():
        package = name if path.stem == "__init__" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level <= 1:
                base = ".".join(x for x in ((package if node.level else ""), node.module or "") if x)
                found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names)
        graph[name] = (found & set(files)) - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None (depth-first search with colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None

