"""The GPU machine's dependency set (``requirements-gpu.txt``) checked without installing anything.

A tool beside the recipe, not verl glue: the RELATE preflight (``recipe/relate/preflight.py``, its
check 5) calls :func:`check_gpu_requirements` for every run and :func:`check_installed_versions`
right before a real vLLM launch; the rest is for ``make check-gpu-deps``.

* :func:`check_gpu_requirements`: every line pinned with ``==`` (or a direct wheel) and in agreement
  with verl's extras metadata (its pins and ranges, the torch a prebuilt wheel was built for);
* :func:`check_installed_versions`: what is installed matches the pins;
* :func:`resolve_gpu_set`: pip's resolver over the whole set for the GPU machine
  (``pip install --dry-run --only-binary=:all: --report``), failing naming any package that would be
  compiled; :func:`check_report` checks such a report made elsewhere.

    python -m relate_tools.gpu_requirements requirements [FILE]     # pins vs verl's metadata
    python -m relate_tools.gpu_requirements gpu-deps [FILE]         # make check-gpu-deps
    python -m relate_tools.gpu_requirements gpu-report REPORT.json [FILE]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GPU_REQUIREMENTS = REPO / "requirements-gpu.txt"


@dataclass(frozen=True)
class Problem:
    """One thing wrong, naming where: a config key or a requirements line, and its value."""

    key: str  # config key (dotted) or "requirements-gpu.txt:LINE"
    value: Any
    message: str

    def __str__(self) -> str:
        return f"{self.key}={self.value!r}: {self.message}"


# The Python the GPU set is resolved for when no direct wheel line names one: verl 0.9.1's documented GPU
# environment is CPython 3.12 on Linux x86_64 (its install docs' uv environment and its flash-attn wheel).
GPU_PYTHON = "3.12"
# The GPU machine: Linux x86_64 with glibc >= 2.31 (Ubuntu 20.04 and later, RHEL 9): vllm 0.24.0's llguidance
# 1.7 ships manylinux_2_31 wheels only, torch 2.11.0 and vllm manylinux_2_28. pip takes a --platform literally
# (no older manylinux tags implied), so every tag such a machine accepts is listed; the direct flash-attn wheel
# carries the plain linux_x86_64 tag.
GPU_GLIBC_MINOR = 31
GPU_PLATFORMS = (*(f"manylinux_2_{minor}_x86_64" for minor in range(GPU_GLIBC_MINOR, 4, -1)),
                 "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64")
GPU_INSTALL = "pip install -r requirements-gpu.txt && pip install --no-deps -e . --config-settings editable_mode=compat"


@dataclass(frozen=True)
class Pin:
    line_no: int
    line: str
    name: str  # canonical
    version: str | None  # None: not pinned with == (nor by a wheel file name)
    url: str | None = None  # a direct wheel: `name @ https://.../name-VERSION-TAGS.whl`

    @property
    def public(self) -> str | None:
        """The public version (PEP 440, without a local tag such as +cu130): what verl's metadata pins."""
        return public_version(self.version) if self.version is not None else None


def public_version(version: str) -> str:
    """``2.11.0+cu130`` -> ``2.11.0``: CUDA-tagged builds are the release their metadata names."""
    from packaging.version import InvalidVersion, Version

    try:
        return Version(version).public
    except InvalidVersion:
        return version


def wheel_file(url: str) -> tuple[str, str, frozenset] | None:
    """(canonical name, version, tags) of the wheel a URL points at, None for anything else (an sdist)."""
    from urllib.parse import unquote, urlsplit

    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    filename = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    if not filename.endswith(".whl"):
        return None
    try:
        name, version, _, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return None
    return str(name), str(version), frozenset(tags)


def read_requirements(path: Path) -> tuple[list[Pin], list[Problem]]:
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    pins, problems = [], []
    for i, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        key = f"{Path(path).name}:{i}"
        try:
            req = Requirement(line)
        except InvalidRequirement as e:
            problems.append(Problem(key, line, f"not a pinned requirement ({e})"))
            continue
        name = canonicalize_name(req.name)
        if req.url:
            wheel = wheel_file(req.url)
            if wheel is None or wheel[0] != name or req.specifier:
                problems.append(Problem(key, line, "a direct URL must name a wheel of this package (NAME @ https://.../"
                                                   "NAME-VERSION-TAGS.whl): a source archive would need a compiler"))
                pins.append(Pin(i, line, name, None, req.url))
                continue
            pins.append(Pin(i, line, name, wheel[1], req.url))
            continue
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version:
            problems.append(Problem(key, line, "every line must pin one exact version with == (NAME==X.Y.Z)"))
            pins.append(Pin(i, line, name, None))
            continue
        pins.append(Pin(i, line, name, specs[0].version))
    return pins, problems


def verl_metadata() -> tuple[str, dict[str, dict[str, set[str]]], dict[str, Any]]:
    """(verl's version, {package: {pinned version: extras pinning it}}, {package: base SpecifierSet})."""
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet
    from packaging.utils import canonicalize_name

    pins: dict[str, dict[str, set[str]]] = {}
    base: dict[str, SpecifierSet] = {}
    for text in importlib.metadata.requires("verl") or []:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", str(req.marker or ""))
        if extra is None:
            base[name] = base.get(name, SpecifierSet()) & req.specifier
        specs = list(req.specifier)
        if len(specs) == 1 and specs[0].operator == "==":
            pins.setdefault(name, {}).setdefault(specs[0].version, set()).add(extra.group(1) if extra else "(base)")
    return importlib.metadata.version("verl"), pins, base


def _build_tag(version: str) -> tuple[int | None, str | None]:
    """(CUDA major, torch major.minor) a prebuilt wheel's local tag names: ``2.8.3+cu130torch2.11`` -> (13, "2.11"),
    ``+cu12torch2.11`` -> (12, "2.11"); (None, None) without such a tag."""
    m = re.search(r"\+cu(\d+)torch(\d+\.\d+)", version)
    if m is None:
        return None, None
    digits = m.group(1)
    return int(digits[:-1] if len(digits) >= 3 else digits), m.group(2)


def check_gpu_requirements(path: Path | str = GPU_REQUIREMENTS) -> list[Problem]:
    """Static: every line pinned (== or a direct wheel), public versions agreeing with verl's own metadata, and
    a prebuilt wheel built for the pinned torch."""
    path = Path(path)
    if not path.is_file():
        return [Problem("requirements-gpu.txt", str(path), "file not found")]
    pins, problems = read_requirements(path)
    verl_version, verl_pins, verl_base = verl_metadata()
    torch_pin = next((p.public for p in pins if p.name == "torch" and p.version), None)
    for pin in pins:
        if pin.version is None:
            continue
        key = f"{path.name}:{pin.line_no}"
        if pin.name == "verl" and pin.public != verl_version:
            problems.append(Problem(key, pin.line, f"the verl whose metadata this is checked against is {verl_version}"))
        pinned = verl_pins.get(pin.name, {})
        if pinned and pin.public not in pinned:
            said = "; ".join(f"=={v} in extra(s) {', '.join(sorted(e))}" for v, e in sorted(pinned.items()))
            problems.append(Problem(key, pin.line, f"verl {verl_version} pins {pin.name} {said}"))
        spec = verl_base.get(pin.name)
        if spec is not None and str(spec) and not spec.contains(pin.public, prereleases=True):
            problems.append(Problem(key, pin.line, f"verl {verl_version} requires {pin.name}{spec}"))
        if pin.url is not None:
            _, built_for = _build_tag(pin.version)
            if torch_pin is not None and built_for is not None and not torch_pin.startswith(built_for + "."):
                problems.append(Problem(key, pin.line, f"the wheel is built for torch {built_for}, the set pins torch=="
                                                       f"{torch_pin}: its compiled kernels would not load"))
    return problems


def check_installed_versions(path: Path | str = GPU_REQUIREMENTS) -> list[Problem]:
    """Installed versions of verl and of every package verl pins, against requirements-gpu.txt.

    Public versions are compared: a CUDA build of torch reports ``2.11.0+cu130`` and a prebuilt flash-attn
    wheel ``2.8.3+cu130torch2.11``; both are the release verl pins."""
    pins, _ = read_requirements(Path(path))
    _, verl_pins, _ = verl_metadata()
    problems = []
    for pin in pins:
        if pin.version is None or not (pin.name == "verl" or pin.name in verl_pins):
            continue
        try:
            installed = importlib.metadata.version(pin.name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed is None or public_version(installed) != pin.public:
            problems.append(Problem(f"{Path(path).name}:{pin.line_no}", pin.line,
                                    f"installed: {installed or 'not installed'} ({GPU_INSTALL})"))
    return problems


def _torch_cuda_major(metadata: Mapping[str, Any]) -> int | None:
    """The CUDA major a resolved torch wheel is built for, from its requirements (cuda-toolkit==13.0.2,
    nvidia-*-cu13)."""
    for text in metadata.get("requires_dist") or []:
        m = re.match(r"cuda-toolkit\S*==(\d+)\.", text) or re.match(r"nvidia-[\w-]+-cu(\d+)\b", text)
        if m:
            return int(m.group(1))
    return None


def check_report(report: Mapping[str, Any], path: Path | str = GPU_REQUIREMENTS) -> tuple[list[Problem], dict[str, str]]:
    """A ``pip install --dry-run --report`` of ``path``: every pin resolved to its (public) version, and every
    distribution a wheel (a source distribution may need a compiler at install)."""
    from packaging.utils import canonicalize_name

    items = report.get("install", [])
    resolved = {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in items}
    pins, problems = read_requirements(Path(path))
    for pin in pins:
        if pin.version is not None and pin.url is None and public_version(resolved.get(pin.name) or "") != pin.public:
            problems.append(Problem(f"{Path(path).name}:{pin.line_no}", pin.line, f"resolved to {resolved.get(pin.name)}"))
    for item in items:
        url = (item.get("download_info") or {}).get("url", "")
        if wheel_file(url) is None:
            name, version = item["metadata"]["name"], item["metadata"]["version"]
            problems.append(Problem(f"{Path(path).name}", f"{name}=={version}", f"resolves to a source distribution "
                                    f"({url.rsplit('/', 1)[-1]}): installing it needs a compiler; {_NO_COMPILER}"))
    torch = next((i["metadata"] for i in items if canonicalize_name(i["metadata"]["name"]) == "torch"), None)
    cuda = _torch_cuda_major(torch) if torch else None
    for pin in pins:
        if pin.url is not None and pin.version is not None and cuda is not None:
            built_cuda, _ = _build_tag(pin.version)
            if built_cuda is not None and built_cuda != cuda:
                problems.append(Problem(f"{Path(path).name}:{pin.line_no}", pin.line,
                                        f"the wheel is built for CUDA {built_cuda}, torch {torch['version']} for CUDA {cuda}"))
    return problems, resolved


_NO_COMPILER = ("pin a version that has a wheel for this Python and platform, or give a prebuilt wheel as "
                "`NAME @ https://.../NAME-VERSION-TAGS.whl` (verl 0.9.1's install docs name the flash-attn 2.8.3 "
                "wheel for CUDA 13.0 / torch 2.11 / cp312), or install the compiler and build prerequisites first "
                "and say so in the README")


def gpu_target(pins: Iterable[Pin]) -> str:
    """The Python (X.Y) the set is for: the CPython tag of its direct wheels (cp312 -> 3.12), else GPU_PYTHON."""
    found = set()
    for pin in pins:
        wheel = wheel_file(pin.url) if pin.url else None
        found |= {t.interpreter for t in (wheel[2] if wheel else ()) if re.fullmatch(r"cp\d{3,}", t.interpreter)}
    if len(found) == 1:
        digits = found.pop()[2:]
        return f"{digits[0]}.{digits[1:]}"
    return GPU_PYTHON


def _pure_python_wheel(spec: str, out: Path, pip_args: Iterable[str], timeout: float) -> tuple[bool, str]:
    """Build ``spec`` from its source distribution here (``pip wheel --no-deps --no-binary :all:``): (True, wheel
    name) when the build gives a pure-Python wheel (``py3-none-any``: no compiler involved), else (False, why)."""
    import subprocess

    before = set(out.glob("*.whl"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-binary", ":all:",
                           "--no-build-isolation", "--quiet", "-w", str(out), *pip_args, spec],
                          capture_output=True, text=True, timeout=timeout)
    built = sorted(set(out.glob("*.whl")) - before)
    if proc.returncode != 0 or not built:
        return False, "its build failed here: " + " | ".join(proc.stderr.strip().splitlines()[-3:])
    wheel = wheel_file(built[0].name)
    if wheel is None or any(t.abi != "none" or t.platform != "any" for t in wheel[2]):
        built[0].unlink()
        return False, f"its build gives a compiled wheel ({built[0].name})"
    return True, built[0].name


def resolve_gpu_set(path: Path | str = GPU_REQUIREMENTS, report_path: Path | str | None = None,
                    pip_args: Iterable[str] = (), python_version: str | None = None,
                    timeout: float = 1800) -> tuple[list[Problem], dict[str, str], list[str]]:
    """pip's resolver over the GPU set for the GPU machine (CPython ``python_version``, Linux x86_64, glibc 2.31),
    installing nothing: ``pip install --dry-run --only-binary=:all: --report``.

    ``--only-binary=:all:`` makes pip refuse every source distribution. A package that has only one is built
    here (``pip wheel``): when that gives a pure-Python wheel (``py3-none-any``, as antlr4-python3-runtime 4.9.3,
    omegaconf's parser runtime, does) pip builds it on the GPU machine without a compiler too, and the resolve
    goes on with it; otherwise (a compiled wheel, or a build that fails, as flash-attn 2.8.3 from the index
    does: its setup.py needs torch, psutil, ninja and nvcc) the package is named with what to do. Direct wheel
    lines (``NAME @ URL.whl``) are checked by their file names (check_gpu_requirements; their CUDA build against
    the resolved torch in check_report) and left out of the resolve: their file is fetched at install and their
    own requirements (flash-attn: torch, einops) are pinned in the set. ``pip_args``: extra pip options (tests: a
    local index). Returns (problems, {name: resolved version}, [pure-Python wheels built from sdists]).
    """
    import subprocess
    import tempfile

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    path = Path(path)
    pins, problems = read_requirements(path)
    if problems:
        return problems, {}, []
    python_version = python_version or gpu_target(pins)
    lines = {p.name: p for p in pins}
    with tempfile.TemporaryDirectory(prefix="relate-gpu-deps-") as tmp:
        index_only = Path(tmp) / path.name
        index_only.write_text("".join(p.line + "\n" for p in pins if p.url is None), encoding="utf-8")
        built_dir = Path(tmp) / "pure-python"
        built_dir.mkdir()
        report = Path(report_path) if report_path is not None else Path(tmp) / "report.json"
        tried: set[str] = set()
        while True:
            cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                   "--only-binary=:all:", "--python-version", python_version, "--implementation", "cp",
                   *[a for plat in GPU_PLATFORMS for a in ("--platform", plat)], "--find-links", str(built_dir),
                   "--target", str(Path(tmp) / "target"), "--report", str(report), *pip_args, "-r", str(index_only)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            if proc.returncode == 0:
                break
            missing = [m for m in dict.fromkeys(re.findall(r"No matching distribution found for (\S+)", proc.stderr))]
            if not missing:
                tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
                return [Problem(path.name, None, f"pip could not resolve the set:\n{tail}")], {}, []
            for text in missing:
                name = canonicalize_name(Requirement(text).name)
                pin = lines.get(name)
                key = f"{path.name}:{pin.line_no}" if pin else path.name
                if name in tried:
                    problems.append(Problem(key, pin.line if pin else text, "no wheel resolves even after building it"))
                    continue
                tried.add(name)
                pure, why = _pure_python_wheel(pin.line if pin else text, built_dir, pip_args, timeout)
                if not pure:
                    problems.append(Problem(key, pin.line if pin else text,
                                            f"no wheel for CPython {python_version} on Linux x86_64 (glibc 2.{GPU_GLIBC_MINOR}) "
                                            f"and {why}: pip would build it from its source distribution, which needs a "
                                            f"compiler; {_NO_COMPILER}"))
            if problems:
                return problems, {}, []
        built = sorted(w.name for w in built_dir.glob("*.whl"))
        found, resolved = check_report(json.loads(report.read_text(encoding="utf-8")), path)
    return found, resolved, built


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m relate_tools.gpu_requirements", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    req = sub.add_parser("requirements", help="check requirements-gpu.txt against verl's metadata")
    req.add_argument("file", nargs="?", default=str(GPU_REQUIREMENTS))
    deps = sub.add_parser("gpu-deps", help="resolve requirements-gpu.txt with pip for the GPU machine, wheels only "
                                           "(make check-gpu-deps)")
    deps.add_argument("file", nargs="?", default=str(GPU_REQUIREMENTS))
    deps.add_argument("--report", default=None, help="keep pip's --report JSON here")
    deps.add_argument("--python-version", default=None, help="target CPython X.Y (default: the set's direct wheels' "
                                                              f"tag, else {GPU_PYTHON})")
    deps.add_argument("--pip-arg", action="append", default=[], help="an extra pip option (repeatable)")
    rep = sub.add_parser("gpu-report", help="check a `pip install --dry-run --report` of requirements-gpu.txt")
    rep.add_argument("report")
    rep.add_argument("file", nargs="?", default=str(GPU_REQUIREMENTS))
    args = parser.parse_args(list(argv) if argv is not None else None)
    built: list[str] = []
    if args.command == "requirements":
        problems = check_gpu_requirements(args.file)
        resolved = None
    elif args.command == "gpu-deps":
        problems, resolved, built = check_gpu_requirements(args.file), {}, []
        if not problems:
            problems, resolved, built = resolve_gpu_set(args.file, args.report, args.pip_arg, args.python_version)
    else:
        problems, resolved = check_report(json.loads(Path(args.report).read_text()), args.file)
        problems += check_gpu_requirements(args.file)
    if problems:
        print(f"{len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems), file=sys.stderr)
        return 1
    from urllib.parse import unquote

    if resolved is None:
        print(f"{args.file}: every line pinned, in agreement with verl {importlib.metadata.version('verl')}'s metadata")
    else:
        key = ", ".join(f"{n}=={resolved[n]}" for n in ("torch", "vllm", "flash-attn", "transformers", "verl") if n in resolved)
        direct = [p for p in read_requirements(Path(args.file))[0] if p.url]
        print(f"{args.file}: resolves as one set of {len(resolved)} distributions, nothing to compile; every pin "
              f"resolved as pinned ({key})"
              + "".join(f"; {p.name}=={p.version}: a prebuilt wheel ({unquote(p.url.rsplit('/', 1)[-1])})" for p in direct)
              + "".join(f"; {name}: pure Python, built from its source distribution without a compiler" for name in built))
    return 0


if __name__ == "__main__":
    sys.exit(main())
