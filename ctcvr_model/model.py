"""The ESMM shared-bottom CTR/CVR network and the two baselines, over standardised features.

Shapes: B rows, S slots, D embedding dim, E lexical features, F = feature_dim(D).

* :class:`ESMM`      shared bottom MLP -> CTR tower, CVR tower; pCTCVR = pCTR * pCVR.
* :class:`NaiveCVR`  two independent MLPs: CTR on all impressions, CVR on clicked ones only
                     (the sample-selection-bias baseline ESMM fixes); pCTCVR = pCTR * pCVR.
* :class:`LogReg`    two independent logistic regressions: CTR and CTCVR directly.

All three sit in one :class:`CTCVRNet` with the shared feature standardisation, so one safetensors
file holds everything that scores and evaluation need. Every head returns the same dict of
logits/probabilities, so metrics and scoring never special-case a model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ctcvr_model.features import FeatureConfig, combine_features

MODEL_NAMES = ("esmm", "naive", "logreg")


@dataclass
class ModelConfig:
    """Network sizes. Saved in config.json ("model")."""

    # Chosen on validation splits of the simulated logs (ctcvr_model/README.md): the simulator's
    # truth is logistic in a few text properties, and with ~250 training advertisers a narrow shared
    # bottom with linear towers generalises to unseen queries better than (256, 128) + (64,).
    bottom_dims: tuple[int, ...] = (64,)  # shared bottom (ESMM) / each naive MLP's trunk
    tower_dims: tuple[int, ...] = ()  # per-task hidden layers above the bottom; () = a linear head
    dropout: float = 0.1

    def __post_init__(self) -> None:
        self.bottom_dims = tuple(int(d) for d in self.bottom_dims)
        self.tower_dims = tuple(int(d) for d in self.tower_dims)


def mlp(in_dim: int, dims: tuple[int, ...], dropout: float, out_dim: int | None = None) -> tuple[nn.Sequential, int]:
    """Linear-ReLU-Dropout stack with hidden sizes ``dims`` (+ a final Linear to ``out_dim``).

    Returns the module and its output width.
    """
    layers: list[nn.Module] = []
    width = in_dim
    for d in dims:
        layers += [nn.Linear(width, d), nn.ReLU(), nn.Dropout(dropout)]
        width = d
    if out_dim is not None:
        layers.append(nn.Linear(width, out_dim))
        width = out_dim
    return nn.Sequential(*layers), width


def _heads(logit_ctr: torch.Tensor, logit_cvr: torch.Tensor) -> dict[str, torch.Tensor]:
    """Probabilities from CTR and CVR logits (each (B,)); pCTCVR = pCTR * pCVR."""
    p_ctr, p_cvr = torch.sigmoid(logit_ctr), torch.sigmoid(logit_cvr)
    return {"logit_ctr": logit_ctr, "logit_cvr": logit_cvr, "p_ctr": p_ctr, "p_cvr": p_cvr, "p_ctcvr": p_ctr * p_cvr}


class ESMM(nn.Module):
    """Entire-space multi-task model: shared bottom, CTR tower, CVR tower."""

    def __init__(self, in_dim: int, cfg: ModelConfig):
        super().__init__()
        self.bottom, width = mlp(in_dim, cfg.bottom_dims, cfg.dropout)
        self.ctr_tower, _ = mlp(width, cfg.tower_dims, cfg.dropout, out_dim=1)
        self.cvr_tower, _ = mlp(width, cfg.tower_dims, cfg.dropout, out_dim=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x (B, F) standardised features -> logits and probabilities, each (B,)."""
        h = self.bottom(x)
        return _heads(self.ctr_tower(h).squeeze(-1), self.cvr_tower(h).squeeze(-1))


class NaiveCVR(nn.Module):
    """Baseline: independent CTR and CVR MLPs (same sizes as ESMM's bottom + tower, nothing shared)."""

    def __init__(self, in_dim: int, cfg: ModelConfig):
        super().__init__()
        dims = cfg.bottom_dims + cfg.tower_dims
        self.ctr_net, _ = mlp(in_dim, dims, cfg.dropout, out_dim=1)
        self.cvr_net, _ = mlp(in_dim, dims, cfg.dropout, out_dim=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x (B, F) -> logits and probabilities, each (B,)."""
        return _heads(self.ctr_net(x).squeeze(-1), self.cvr_net(x).squeeze(-1))


class LogReg(nn.Module):
    """Baseline: logistic regression heads for CTR and CTCVR on the same features.

    It has no CVR head; its pCVR is derived as min(1, pCTCVR / pCTR) so that CVR metrics can still be
    reported for it (and 'logit_cvr' is the logit of that ratio).
    """

    def __init__(self, in_dim: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, 2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x (B, F) -> logits and probabilities, each (B,)."""
        logits = self.linear(x)
        logit_ctr, logit_ctcvr = logits[:, 0], logits[:, 1]
        p_ctr, p_ctcvr = torch.sigmoid(logit_ctr), torch.sigmoid(logit_ctcvr)
        p_cvr = (p_ctcvr / p_ctr.clamp_min(1e-12)).clamp(1e-7, 1 - 1e-7)
        return {
            "logit_ctr": logit_ctr,
            "logit_ctcvr": logit_ctcvr,
            "logit_cvr": torch.logit(p_cvr),
            "p_ctr": p_ctr,
            "p_cvr": p_cvr,
            "p_ctcvr": p_ctcvr,
        }


class CTCVRNet(nn.Module):
    """Feature construction + standardisation + the three models.

    Buffers ``feature_mean`` / ``feature_std`` (F,) are fitted on the training table and saved with
    the weights, so scoring reproduces training's inputs exactly.
    """

    def __init__(self, emb_dim: int, feature_cfg: FeatureConfig, model_cfg: ModelConfig):
        super().__init__()
        self.emb_dim = emb_dim
        self.feature_cfg = feature_cfg
        self.model_cfg = model_cfg
        in_dim = feature_cfg.feature_dim(emb_dim)
        self.in_dim = in_dim
        self.register_buffer("feature_mean", torch.zeros(in_dim))
        self.register_buffer("feature_std", torch.ones(in_dim))
        if feature_cfg.style:  # fitted on the training texts (features.fit_style_basis)
            self.register_buffer("style_basis", torch.zeros(feature_cfg.style, emb_dim))
        else:
            self.style_basis = None
        self.esmm = ESMM(in_dim, model_cfg)
        self.naive = NaiveCVR(in_dim, model_cfg)
        self.logreg = LogReg(in_dim)

    def set_style_basis(self, basis: torch.Tensor) -> None:
        """Install the (k, D) style directions fitted on the training texts."""
        if self.style_basis is None:
            raise ValueError("this model has no style components (features.style = 0)")
        self.style_basis.copy_(torch.as_tensor(basis, dtype=torch.float32))

    def set_moments(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Install the training-set feature mean and std, each (F,)."""
        self.feature_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.feature_std.copy_(torch.as_tensor(std, dtype=torch.float32))

    @torch.no_grad()
    def init_output_biases(self, p_ctr: float, p_cvr: float, p_ctcvr: float) -> None:
        """Start every head at the training base rates instead of p = 0.5.

        With rare positives (CTCVR ~ 1e-3) a head starting at 0.5 spends its first epochs only
        learning the base rate, and early stopping on a noisy validation AUC can stop it there.
        """

        def logit(p: float) -> float:
            p = min(max(p, 1e-6), 1 - 1e-6)
            return math.log(p / (1 - p))

        for sub in (self.esmm, self.naive):
            ctr_out, cvr_out = (sub.ctr_tower[-1], sub.cvr_tower[-1]) if sub is self.esmm else (sub.ctr_net[-1], sub.cvr_net[-1])
            ctr_out.bias.fill_(logit(p_ctr))
            cvr_out.bias.fill_(logit(p_cvr))
        self.logreg.linear.bias.copy_(torch.tensor([logit(p_ctr), logit(p_ctcvr)]))

    def features(self, slot_emb: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        """slot_emb (B, S, D), extra (B, E) -> standardised features (B, F)."""
        x = combine_features(slot_emb, extra, self.feature_cfg, self.style_basis)
        return (x - self.feature_mean) / self.feature_std

    def head(self, name: str) -> nn.Module:
        """The sub-model called ``name`` (one of MODEL_NAMES)."""
        if name not in MODEL_NAMES:
            raise ValueError(f"unknown model '{name}'; choose one of {MODEL_NAMES}")
        return getattr(self, name)

    def forward(self, slot_emb: torch.Tensor, extra: torch.Tensor, model: str = "esmm") -> dict[str, torch.Tensor]:
        """Predictions of sub-model ``model`` for slot_emb (B, S, D), extra (B, E); each output (B,)."""
        return self.head(model)(self.features(slot_emb, extra))
