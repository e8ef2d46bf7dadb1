"""Training losses of the ESMM model and its baselines.

All losses take per-row tensors of shape (B,): logits, labels in [0, 1] (fractions on aggregated
rows) and positive weights (impression counts). A row stands for ``weight * label`` positives and
``weight * (1 - label)`` negatives, so a weighted BCE on an aggregated row equals the sum of the BCEs
of the impressions it replaces. Each term is a weighted *mean* over the rows it covers.

Notation: click = y, ctcvr = z (click AND conversion), pCTR = sigmoid(u), pCVR = sigmoid(v).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def weighted_bce_with_logits(logit: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """sum_i w_i * BCE(target_i, sigmoid(logit_i)) / sum_i w_i; 0 when every weight is 0. Shapes (B,)."""
    per_row = F.binary_cross_entropy_with_logits(logit, target, reduction="none")
    denom = weight.sum()
    return (per_row * weight).sum() / denom.clamp_min(1e-12)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, accurate at both ends (Maechler 2012)."""
    x = x.clamp(max=-1e-12)
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def product_bce(logit_a: torch.Tensor, logit_b: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted BCE of target against p = sigmoid(a) * sigmoid(b), computed in log space.

    log p = logsigmoid(a) + logsigmoid(b); log(1 - p) = log1mexp(log p). Working in logs keeps the
    gradient finite when p is tiny (CTCVR is typically 1e-3), where BCE on the product would not be.
    """
    log_p = F.logsigmoid(logit_a) + F.logsigmoid(logit_b)
    per_row = -(target * log_p + (1.0 - target) * log1mexp(log_p))
    return (per_row * weight).sum() / weight.sum().clamp_min(1e-12)


def esmm_loss(
    logit_ctr: torch.Tensor, logit_cvr: torch.Tensor, click: torch.Tensor, ctcvr: torch.Tensor, weight: torch.Tensor
) -> dict[str, torch.Tensor]:
    """ESMM (Ma et al., 2018): BCE(y, pCTR) + BCE(z, pCTR * pCVR), both over ALL impressions.

    The CVR tower never sees a loss of its own: it is learned through the product, over the entire
    impression space, which removes the sample-selection bias of training CVR on clicks only.
    Returns {"loss", "ctr", "ctcvr"}, scalars.
    """
    ctr = weighted_bce_with_logits(logit_ctr, click, weight)
    ctcvr_term = product_bce(logit_ctr, logit_cvr, ctcvr, weight)
    return {"loss": ctr + ctcvr_term, "ctr": ctr, "ctcvr": ctcvr_term}


def naive_loss(
    logit_ctr: torch.Tensor, logit_cvr: torch.Tensor, click: torch.Tensor, ctcvr: torch.Tensor, weight: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Sample-selection-bias baseline: BCE(y, pCTR) over all rows + BCE(conversion, pCVR) over clicked rows.

    The CVR term weighs row i by w_i * y_i (its clicked impressions) with label z_i / y_i (the share
    of those clicks that converted). The two towers share no parameters (NaiveCVR), so summing the
    terms trains them exactly as two separate models would be trained.
    Returns {"loss", "ctr", "cvr"}, scalars.
    """
    ctr = weighted_bce_with_logits(logit_ctr, click, weight)
    clicked_w = weight * click
    cvr_target = torch.where(click > 0, ctcvr / click.clamp_min(1e-12), torch.zeros_like(ctcvr)).clamp(0.0, 1.0)
    cvr = weighted_bce_with_logits(logit_cvr, cvr_target, clicked_w)
    return {"loss": ctr + cvr, "ctr": ctr, "cvr": cvr}


def logreg_loss(
    logit_ctr: torch.Tensor, logit_ctcvr: torch.Tensor, click: torch.Tensor, ctcvr: torch.Tensor, weight: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Logistic-regression baseline: two independent heads, BCE(y, pCTR) + BCE(z, pCTCVR), all rows."""
    ctr = weighted_bce_with_logits(logit_ctr, click, weight)
    ctcvr_term = weighted_bce_with_logits(logit_ctcvr, ctcvr, weight)
    return {"loss": ctr + ctcvr_term, "ctr": ctr, "ctcvr": ctcvr_term}
