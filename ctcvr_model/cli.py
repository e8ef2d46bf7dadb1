"""What the ctcvr_model commands (train, evaluate, score) share on the command line."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

EXIT_INVALID_INPUT = 2


def command_parser(module: str, description: str) -> argparse.ArgumentParser:
    """The parser of ``python -m ctcvr_model.<module>``, defaults shown in ``--help``."""
    return argparse.ArgumentParser(prog=f"python -m ctcvr_model.{module}", description=description,
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def add_device_flag(p: argparse.ArgumentParser) -> None:
    """``--device``: one wording for the rule of ctcvr_model.device.default_device."""
    p.add_argument("--device", default=None, help="torch device; default: cuda when available, else cpu")


def exit_invalid(err: Exception) -> NoReturn:
    """Print ``err`` to stderr and exit with the invalid-input code."""
    print(f"error: {err}", file=sys.stderr)
    raise SystemExit(EXIT_INVALID_INPUT) from None
