"""A tiny make-like stage runner for the demo pipeline.

A stage is skipped when its completion marker is newer than every input (data files and the
source files of the code it runs). The marker is written only after the stage returned, and
every output is written atomically, so an interrupted run (Ctrl-C) is never mistaken for a
finished one: the next run redoes that stage.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Stage:
    name: str
    run: Callable[[], object]
    inputs: Sequence[Path]
    outputs: Sequence[Path]
    elapsed_s: float = field(default=0.0, init=False)
    skipped: bool = field(default=False, init=False)

    def marker(self, state_dir: Path) -> Path:
        return state_dir / f".stage-{self.name}.done"

    def is_fresh(self, state_dir: Path) -> bool:
        marker = self.marker(state_dir)
        if not marker.exists() or not all(p.exists() for p in self.outputs):
            return False
        newest_input = max((p.stat().st_mtime for p in self.inputs if p.exists()), default=0.0)
        return marker.stat().st_mtime >= newest_input


def run_stages(stages: Sequence[Stage], state_dir: Path, force: bool = False) -> None:
    """Run each stage unless fresh; print the elapsed time of each and the total."""
    state_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for i, stage in enumerate(stages, start=1):
        header = f"[{i}/{len(stages)}] {stage.name}"
        if not force and stage.is_fresh(state_dir):
            stage.skipped = True
            print(f"{header}: up to date, skipped")
            continue
        print(f"{header} ...", flush=True)
        stage.marker(state_dir).unlink(missing_ok=True)
        t0 = time.perf_counter()
        stage.run()
        stage.elapsed_s = time.perf_counter() - t0
        stage.marker(state_dir).touch()
        print(f"{header}: done in {stage.elapsed_s:.1f} s", flush=True)
    total = time.perf_counter() - start
    print("\nstage times: " + ", ".join(
        f"{s.name} {'skipped' if s.skipped else f'{s.elapsed_s:.1f} s'}" for s in stages) + f"; total {total:.1f} s")


def sources_of(*modules: object) -> list[Path]:
    """Source files of imported modules, so a code change makes their stage stale."""
    return [Path(m.__file__) for m in modules if getattr(m, "__file__", None)]
