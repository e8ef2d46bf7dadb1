"""One rule for "no device given", shared by the encoders, the model and the scorer.

Its own module so that ``encoders`` need not import ``model`` (which imports ``features``, which
imports ``encoders``): that import cycle existed only for these four lines.
"""

from __future__ import annotations

import torch


def default_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else CUDA when available, else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
