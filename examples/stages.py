"""A tiny make-like stage runner for the demo pipeline.

A stage is skipped ("fresh") when its completion marker exists, every output exists, the marker
records the same parameters as this run asks for, and the marker is newer than every input (data
files and the source files of the code it runs). The marker is written only after the stage
returned, stamped with the time the stage STARTED (so an input edited while it ran makes it stale),
and every output is written atomically or guarded by that marker, so an interrupted run (Ctrl-C)
is never mistaken for a finished one: the next run redoes that stage.

A stage's ``run`` may return a CLI exit code: a non-zero int is a failure (no marker), like an
exception.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MARKER_PREFIX = ".stage-"
MARKER_SUFFIX = ".done"


class StageError(RuntimeError):
    """A stage failed (an exit code other than 0); its marker is not written."""


@dataclass
class Stage:
    """One step of the pipeline: ``run()`` turns ``inputs`` into ``outputs``.

    ``params``: JSON-able settings that change what the stage produces although no input file
    changes (e.g. the number of training steps); a different value makes the stage stale.
    """

    name: str
    run: Callable[[], object]
    inputs: Sequence[Path]
    outputs: Sequence[Path]
    params: Mapping[str, Any] = field(default_factory=dict)
    elapsed_s: float = field(default=0.0, init=False)
    skipped: bool = field(default=False, init=False)

    def marker(self, state_dir: Path) -> Path:
        return state_dir / f"{MARKER_PREFIX}{self.name}{MARKER_SUFFIX}"

    def _params_json(self) -> Any:
        return json.loads(json.dumps(dict(self.params), sort_keys=True, default=str))

    def stale_reason(self, state_dir: Path) -> str | None:
        """Why the stage must run (None: it is fresh and is skipped)."""
        marker = self.marker(state_dir)
        if not marker.exists():
            return "no completed run yet"
        missing = [p for p in self.outputs if not p.exists()]
        if missing:
            return f"output missing: {missing[0]}"
        recorded = read_marker(marker)
        if recorded.get("params") != self._params_json():
            return "parameters changed"
        done_at = marker.stat().st_mtime
        newer = [p for p in self.inputs if p.exists() and p.stat().st_mtime > done_at]
        if newer:
            return f"input changed: {newer[0]}"
        return None

    def mark_done(self, state_dir: Path, started_at: float) -> None:
        """Write the marker atomically, stamped with the stage's start time."""
        marker = self.marker(state_dir)
        tmp = marker.with_name(marker.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"stage": self.name, "params": self._params_json(),
                                   "elapsed_s": round(self.elapsed_s, 2),
                                   "finished": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1) + "\n",
                       encoding="utf-8")
        os.utime(tmp, (started_at, started_at))
        os.replace(tmp, marker)


def read_marker(marker: Path) -> dict[str, Any]:
    """The JSON a completed stage left (``{}`` for an empty or unreadable marker: treated as stale)."""
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def stage_times(state_dir: Path, names: Iterable[str]) -> dict[str, float | None]:
    """Elapsed seconds of the last completed run of each named stage (None: never completed)."""
    out: dict[str, float | None] = {}
    for name in names:
        data = read_marker(state_dir / f"{MARKER_PREFIX}{name}{MARKER_SUFFIX}")
        out[name] = float(data["elapsed_s"]) if "elapsed_s" in data else None
    return out


def depends_on(stage: Stage, earlier: Stage) -> bool:
    """True when ``stage`` reads something ``earlier`` writes: one of its inputs is one of
    ``earlier``'s outputs or lies inside an output folder."""
    outputs = [Path(o) for o in earlier.outputs]
    return any(Path(i) == o or o in Path(i).parents for i in stage.inputs for o in outputs)


def run_stages(stages: Sequence[Stage], state_dir: Path, force: bool = False, at_once: int = 1) -> float:
    """Run each stage unless fresh; print the elapsed time of each and the total (returned).

    ``at_once`` > 1 runs up to that many stages at the same time (in threads: meant for stages that
    wait on child processes, such as verl jobs): stages start in order, each once every earlier stage
    it :func:`depends_on` has finished. With 1 (the default) they run one after another in this thread.

    An exception or Ctrl-C inside a stage leaves its marker absent (it was removed before the
    stage started), prints which stage stopped, and propagates once the stages already running
    have ended; no further stage starts.
    """
    if at_once < 1:
        raise ValueError(f"at_once must be >= 1, got {at_once}")
    state_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    pending: dict[int, Future] = {}  # index of a started stage -> its future

    def run_one(i: int, stage: Stage, reason: str) -> None:
        header = f"[{i}/{len(stages)}] {stage.name}"
        print(f"{header} ... ({reason})", flush=True)
        stage.marker(state_dir).unlink(missing_ok=True)
        started_at = time.time()
        t0 = time.perf_counter()
        try:
            result = stage.run()
            if isinstance(result, int) and not isinstance(result, bool) and result != 0:
                raise StageError(f"stage {stage.name} failed with exit code {result} (see the messages above)")
        except BaseException as e:
            what = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
            print(f"\n{header}: {what} after {time.perf_counter() - t0:.1f} s; nothing of it counts as done, "
                  "the next run redoes it", flush=True)
            raise
        stage.elapsed_s = time.perf_counter() - t0
        stage.mark_done(state_dir, started_at)
        print(f"{header}: done in {stage.elapsed_s:.1f} s", flush=True)

    with ThreadPoolExecutor(max_workers=at_once) as pool:
        try:
            for i, stage in enumerate(stages, start=1):
                # A stage's freshness is judged once what it reads has been written.
                for k in [k for k in pending if depends_on(stage, stages[k - 1])]:
                    pending.pop(k).result()
                reason = "--force" if force else stage.stale_reason(state_dir)
                if reason is None:
                    stage.skipped = True
                    print(f"[{i}/{len(stages)}] {stage.name}: up to date, skipped", flush=True)
                    continue
                if at_once == 1:
                    run_one(i, stage, reason)
                    continue
                while len([f for f in pending.values() if not f.done()]) >= at_once:
                    wait(pending.values(), return_when=FIRST_COMPLETED)
                for k in [k for k, f in pending.items() if f.done()]:
                    pending.pop(k).result()  # a failed stage stops the run here
                pending[i] = pool.submit(run_one, i, stage, reason)
            for k in list(pending):
                pending.pop(k).result()
        except BaseException:
            for f in pending.values():
                f.cancel()
            raise
    total = time.perf_counter() - start
    print("\nstage times: " + ", ".join(
        f"{s.name} {'skipped' if s.skipped else f'{s.elapsed_s:.1f} s'}" for s in stages) + f"; total {total:.1f} s",
        flush=True)
    return total


def sources_of(*modules: object) -> list[Path]:
    """Source files of imported modules, so a code change makes their stage stale.

    A package counts with every ``.py`` and ``.yaml`` file under its folder (its submodules and
    bundled configs), so pass a package when the stage uses much of it.
    """
    out: list[Path] = []
    for m in modules:
        file = getattr(m, "__file__", None)
        if not file:
            continue
        path = Path(file)
        if path.name == "__init__.py" and getattr(m, "__path__", None):
            out.extend(sorted(p for ext in ("*.py", "*.yaml") for p in path.parent.rglob(ext)
                              if "__pycache__" not in p.parts))
        else:
            out.append(path)
    return out
