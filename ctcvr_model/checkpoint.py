"""Save and load a trained CTCVR model directory.

Layout::

    DIR/config.json        schema_version, encoder {name, dim}, features (incl. the industry vocabulary),
                           model, training, weights sha256
    DIR/model.safetensors  CTCVRNet state (feature standardisation + ESMM + both baselines)
    DIR/metrics.json       training/validation figures (written by train, not needed to load)

Every way loading can fail raises :class:`~ctcvr_model.schema.ModelDirError` that says which file,
what is wrong and what to do, because the reward workers that load it run far from the person who
has to fix it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ctcvr_model.features import FeatureConfig
from ctcvr_model.model import CTCVRNet, ModelConfig
from ctcvr_model.schema import ModelDirError
from relate_common.jsonio import write_text_atomic

# 1: the first release. 2: the optional industry one-hot (features.industry, features.industry_vocab).
SCHEMA_VERSION = 2
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"


@dataclass
class SavedModel:
    """Everything config.json records about a trained model."""

    encoder_name: str
    emb_dim: int
    features: FeatureConfig
    model: ModelConfig
    training: dict[str, Any] = field(default_factory=dict)
    default_model: str = "esmm"

    def to_json(self, weights_sha256: str) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "encoder": {"name": self.encoder_name, "dim": self.emb_dim},
            "features": asdict(self.features),
            "feature_construction": self.features.describe(),
            "feature_dim": self.features.feature_dim(self.emb_dim),
            "model": asdict(self.model),
            "default_model": self.default_model,
            "training": self.training,
            "weights": {"file": WEIGHTS_FILE, "sha256": weights_sha256},
        }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json(path: Path, obj: Any) -> None:
    """Pretty, UTF-8 (Chinese stays readable), atomically written JSON."""
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def save_model(model_dir: str | Path, net: CTCVRNet, saved: SavedModel) -> Path:
    """Write weights then config.json (config last: a directory with a config is complete)."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    weights = model_dir / WEIGHTS_FILE
    tmp = weights.with_suffix(".safetensors.tmp")
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(tmp), metadata={"schema_version": str(SCHEMA_VERSION), "encoder": saved.encoder_name})
    os.replace(tmp, weights)
    write_json(model_dir / CONFIG_FILE, saved.to_json(_sha256(weights)))
    return model_dir


def read_config(model_dir: str | Path) -> dict[str, Any]:
    """Parse and check config.json (existence, JSON, schema version, required keys)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelDirError(model_dir, "the directory does not exist", "Pass the --output-dir of `python -m ctcvr_model.train`.")
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        raise ModelDirError(
            model_dir, f"missing file {CONFIG_FILE}", "The directory is not a trained CTCVR model (or training did not finish); retrain it."
        )
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelDirError(model_dir, f"{CONFIG_FILE} is not valid JSON ({e})", "Restore the file or retrain the model.") from None
    if not isinstance(cfg, dict):
        raise ModelDirError(model_dir, f"{CONFIG_FILE} is not a JSON object", "Restore the file or retrain the model.")
    version = cfg.get("schema_version")
    if version == 1:
        raise ModelDirError(
            model_dir,
            f"schema_version is 1 but this code reads schema_version {SCHEMA_VERSION} (version 2 added the "
            "industry feature and its vocabulary to config.json and changed the feature layout)",
            "Retrain the model with this version of ctcvr_model (`python -m ctcvr_model.train ...`; add "
            "--no-industry for a model without the industry feature), or use the code version that wrote it.",
        )
    if version != SCHEMA_VERSION:
        raise ModelDirError(
            model_dir,
            f"schema_version is {version!r} but this code reads schema_version {SCHEMA_VERSION}",
            "Retrain the model with this version of ctcvr_model (`python -m ctcvr_model.train ...`), "
            "or use the code version that wrote it.",
        )
    for key in ("encoder", "features", "model"):
        if key not in cfg:
            raise ModelDirError(model_dir, f"{CONFIG_FILE} lacks the '{key}' section", "Retrain the model.")
    enc = cfg["encoder"]
    if not isinstance(enc, dict) or not isinstance(enc.get("name"), str) or not isinstance(enc.get("dim"), int):
        raise ModelDirError(model_dir, f"{CONFIG_FILE} 'encoder' must hold a name (str) and a dim (int)", "Retrain the model.")
    return cfg


def load_model(model_dir: str | Path, encoder_dim: int | None = None, map_location: str = "cpu") -> tuple[CTCVRNet, SavedModel]:
    """Load a model directory into a CTCVRNet (eval mode) and its SavedModel description.

    ``encoder_dim``: the dimension of the encoder that will feed the model; a mismatch with the
    dimension the model was trained on is an error (the features would be meaningless).
    """
    model_dir = Path(model_dir)
    cfg = read_config(model_dir)
    trained_dim = int(cfg["encoder"]["dim"])
    if encoder_dim is not None and int(encoder_dim) != trained_dim:
        raise ModelDirError(
            model_dir,
            f"the model was trained on {trained_dim}-d embeddings from encoder '{cfg['encoder']['name']}' "
            f"but the encoder given here produces {encoder_dim}-d embeddings",
            f"Load it with the encoder it was trained with ('{cfg['encoder']['name']}'), or retrain with the new encoder.",
        )
    try:
        features = FeatureConfig(**cfg["features"])
        model_cfg = ModelConfig(**cfg["model"])
    except (TypeError, ValueError) as e:
        raise ModelDirError(model_dir, f"{CONFIG_FILE} has an invalid features/model section ({e})", "Retrain the model.") from None
    weights = model_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelDirError(model_dir, f"missing file {WEIGHTS_FILE}", "Copy the whole model directory, or retrain the model.")
    expected_sha = (cfg.get("weights") or {}).get("sha256")
    if expected_sha and _sha256(weights) != expected_sha:
        raise ModelDirError(
            model_dir,
            f"{WEIGHTS_FILE} is corrupt or was replaced (sha256 differs from the one in {CONFIG_FILE})",
            "Copy the directory again from where it was trained, or retrain the model.",
        )
    try:
        state = load_file(str(weights), device=map_location)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ModelDirError(model_dir, f"{WEIGHTS_FILE} cannot be read ({e})", "The file is corrupt: copy it again or retrain the model.") from None
    net = CTCVRNet(trained_dim, features, model_cfg)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelDirError(
            model_dir, f"{WEIGHTS_FILE} does not match {CONFIG_FILE} ({str(e).splitlines()[0]} ...)", "Retrain the model; do not mix files of two runs."
        ) from None
    net.eval()
    saved = SavedModel(
        encoder_name=cfg["encoder"]["name"],
        emb_dim=trained_dim,
        features=features,
        model=model_cfg,
        training=cfg.get("training", {}),
        default_model=cfg.get("default_model", "esmm"),
    )
    return net, saved

