"""A tiny make-like stage runner for the demo pipeline, and the one cache rule of the examples.

The rule (:func:`fingerprint`): a result is up to date when what it was made from is unchanged:
its parameters (JSON-able settings such as a job's argv) and every input file's size and
modification time. Stages keep that fingerprint in their completion marker; a verl job keeps the
same fingerprint in its ``job.json`` to decide between resuming and starting over
(``examples/verl_jobs.py``).

A stage is skipped ("fresh") when its marker exists, every output exists and the marker's
fingerprint equals the one of this run. Its inputs are its data files and the code it runs, computed
by :func:`code_inputs` from the modules it calls (their project imports, followed transitively),
never listed by hand. The marker is written only after the stage returned, with the fingerprint
taken when the stage STARTED (so an input edited while it ran makes it stale), and every output is
written atomically or guarded by that marker, so an interrupted run (Ctrl-C) is never mistaken for
a finished one: the next run redoes that stage.

A stage's ``run`` may return a CLI exit code: a non-zero int is a failure (no marker), like an
exception.
"""

from __future__ import annotations

import ast
import json
import os
import time
from functools import lru_cache
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

    def fingerprint(self) -> dict[str, Any]:
        return fingerprint(self.params, self.inputs)

    def stale_reason(self, state_dir: Path) -> str | None:
        """Why the stage must run (None: it is fresh and is skipped)."""
        marker = self.marker(state_dir)
        if not marker.exists():
            return "no completed run yet"
        missing = [p for p in self.outputs if not p.exists()]
        if missing:
            return f"output missing: {missing[0]}"
        return changed(read_marker(marker), self.fingerprint())

    def mark_done(self, state_dir: Path, stamp: Mapping[str, Any]) -> None:
        """Write the marker atomically with ``stamp``, the fingerprint taken when the stage started."""
        marker = self.marker(state_dir)
        tmp = marker.with_name(marker.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"stage": self.name, **stamp, "elapsed_s": round(self.elapsed_s, 2),
                                   "finished": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1) + "\n",
                       encoding="utf-8")
        os.replace(tmp, marker)


def _stamp(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def fingerprint(params: Mapping[str, Any], inputs: Iterable[Path]) -> dict[str, Any]:
    """What a result is made from: ``params`` as JSON and each input's [size, mtime_ns] (None: absent)."""
    return {"params": json.loads(json.dumps(dict(params), sort_keys=True, default=str)),
            "inputs": {str(p): _stamp(Path(p)) for p in inputs}}


def changed(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> str | None:
    """Why ``current`` differs from the ``recorded`` fingerprint (None: it does not)."""
    if recorded.get("params") != current["params"]:
        return "parameters changed"
    before = recorded.get("inputs")
    if not isinstance(before, dict):
        return "no fingerprint recorded"
    for path, stamp in current["inputs"].items():
        if before.get(path, "absent") != stamp:
            return f"input changed: {path}"
    gone = sorted(set(before) - set(current["inputs"]))
    return f"input no longer used: {gone[0]}" if gone else None


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
        stamp = stage.fingerprint()
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
        stage.mark_done(state_dir, stamp)
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


PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _project_file(name: str) -> Path | None:
    """The source file of module ``name`` when it is one of this repository's, else None (found by
    path, without importing anything)."""
    parts = name.split(".")
    if not parts[0] or not (PROJECT_ROOT / parts[0] / "__init__.py").is_file():
        return None
    base = PROJECT_ROOT.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@lru_cache(maxsize=None)
def _imports(path: Path) -> tuple[Path, ...]:
    """Project modules that the module at ``path`` imports anywhere in its body (function-level
    imports included), and the packages on the way to each."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                head = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*head, base] if base else head)
            names += [base, *(f"{base}.{a.name}" for a in node.names)]  # `from pkg import module`
    found = []
    for name in names:
        parts = name.split(".")
        for k in range(1, len(parts) + 1):
            file = _project_file(".".join(parts[:k]))
            if file is not None:
                found.append(file)
    return tuple(dict.fromkeys(found))


def _resources(folder: Path) -> list[Path]:
    """Configs and data a package reads: *.yaml under its folder, outside sub-packages."""
    out = []
    for p in sorted(folder.iterdir()):
        if p.suffix == ".yaml":
            out.append(p)
        elif p.is_dir() and not (p / "__init__.py").exists() and p.name != "__pycache__":
            out += _resources(p)
    return out


def code_inputs(*modules: object) -> list[Path]:
    """Every source file a stage's code runs: the given modules (a package counts with all of its
    modules) and every project module they import, followed transitively; plus the YAML configs of
    each package involved. Computed from the code itself, so a new import is never forgotten."""
    todo: list[Path] = []
    for m in modules:
        file = getattr(m, "__file__", None)
        if not file:
            continue
        path = Path(file).resolve()
        if path.name == "__init__.py" and getattr(m, "__path__", None):
            todo += sorted(p.resolve() for p in path.parent.rglob("*.py") if "__pycache__" not in p.parts)
        else:
            todo.append(path)
    seen: dict[Path, None] = {}
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen[path] = None
        todo += [p for p in _imports(path) if p not in seen]
        # importing a module runs its packages' __init__ first
        todo += [d / "__init__.py" for d in path.parents if PROJECT_ROOT in d.parents and (d / "__init__.py").is_file()]
    folders = sorted({p.parent for p in seen})
    return sorted(seen) + [r for f in folders for r in _resources(f)]
