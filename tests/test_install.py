"""The installed .venv resolves our packages, not the TransferQueue wheel's same-named folders.

TransferQueue 0.1.11 (a verl dependency) installs top-level ``recipe/``, ``tests/``, ``scripts/`` and
``tutorial/`` folders into site-packages; its ``recipe/`` has no ``__init__.py``, so it is a namespace
portion. Our ``recipe`` is a regular package, and a regular package anywhere on ``sys.path`` wins over
namespace portions, provided our repository root is on ``sys.path``: the Makefile installs with
``editable_mode=compat`` (a ``.pth`` with the root). The default editable finder runs after Python's
path finder has already taken the namespace folder, which left ``import recipe`` (outside the
repository root) on the wheel's folder and only ``recipe.relate`` reaching ours.

Checked from a folder outside the repository, with no PYTHONPATH, in a plain interpreter and inside a
Ray worker (where verl's TaskRunner and workers import ``recipe.relate``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.fixtures import REPO
IMPORTS = "import recipe, recipe.relate.relate_core_algos as algos, reward_fns"
FILES = "[recipe.__file__, algos.__file__, reward_fns.__file__]"
PROBE = f"import json; {IMPORTS}; print(json.dumps({FILES}))"
RAY_PROBE = f"""
import json, ray
ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)

@ray.remote
def where():
    {IMPORTS}
    return {FILES}

print(json.dumps(ray.get(where.remote())))
ray.shutdown()
"""
OURS = [str(REPO / "recipe" / "__init__.py"), str(REPO / "recipe" / "relate" / "relate_core_algos.py"),
        str(REPO / "reward_fns" / "__init__.py")]


def _outside_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_transfer_queue_still_ships_a_recipe_namespace_folder():
    """What makes the next tests meaningful: the wheel's folder is there and is a namespace portion."""
    folder = Path(sysconfig.get_paths()["purelib"]) / "recipe"
    assert folder.is_dir() and not (folder / "__init__.py").exists()


def test_our_recipe_wins_from_any_folder(tmp_path):
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, env=_outside_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == OURS


@pytest.mark.slow
def test_our_recipe_wins_inside_a_ray_worker(tmp_path):
    proc = subprocess.run([sys.executable, "-c", RAY_PROBE], cwd=tmp_path, env=_outside_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == OURS
