"""relate_tools/gpu_requirements.py: requirements-gpu.txt pinned and in agreement with verl's metadata,
installed versions against the pins, and `make check-gpu-deps` (pip's resolver, wheels only) refusing what
would be compiled, on real distributions built here offline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from relate_tools.gpu_requirements import (GPU_REQUIREMENTS, check_gpu_requirements, check_installed_versions,
                                           public_version, read_requirements)

from tests.fixtures import REPO


# ---- GPU requirements --------------------------------------------------------------------------------------


def _requirements_copy(tmp_path, replace: dict[str, str]) -> Path:
    lines = GPU_REQUIREMENTS.read_text().splitlines()
    for old, new in replace.items():
        assert old in lines, old
        lines[lines.index(old)] = new
    out = tmp_path / "requirements-gpu.txt"
    out.write_text("\n".join(lines) + "\n")
    return out


FLASH_ATTN_WHEEL = next(line for line in GPU_REQUIREMENTS.read_text().splitlines() if line.startswith("flash-attn @ "))


def test_gpu_requirements_are_pinned_and_agree_with_verls_metadata(tmp_path):
    assert check_gpu_requirements() == []
    text = GPU_REQUIREMENTS.read_text()
    for pin in ("torch==2.11.0", "vllm==0.24.0", "transformers==5.9.0", "verl==0.9.1", "einops==0.8.2"):
        assert f"\n{pin}\n" in text
    # flash-attn: verl's pin 2.8.3 as the prebuilt CUDA 13.0 / torch 2.11 / cp312 wheel (nothing to compile)
    assert FLASH_ATTN_WHEEL.endswith("/flash_attn-2.8.3%2Bcu130torch2.11-cp312-cp312-linux_x86_64.whl")
    unpinned = check_gpu_requirements(_requirements_copy(tmp_path, {FLASH_ATTN_WHEEL: "flash-attn"}))
    assert [(p.key.split(":")[0], p.value) for p in unpinned] == [("requirements-gpu.txt", "flash-attn")]
    assert "pin one exact version with ==" in str(unpinned[0])
    sdist = FLASH_ATTN_WHEEL.split(" @ ")[0] + " @ https://example.org/flash_attn-2.8.3.tar.gz"
    archive = check_gpu_requirements(_requirements_copy(tmp_path, {FLASH_ATTN_WHEEL: sdist}))
    assert [p.value for p in archive] == [sdist] and "must name a wheel" in str(archive[0])
    older = FLASH_ATTN_WHEEL.replace("cu130torch2.11", "cu130torch2.10")
    mismatch = [str(p) for p in check_gpu_requirements(_requirements_copy(tmp_path, {FLASH_ATTN_WHEEL: older}))]
    assert len(mismatch) == 1 and "built for torch 2.10, the set pins torch==2.11.0" in mismatch[0]
    newer_fa = FLASH_ATTN_WHEEL.replace("2.8.3", "2.8.4")
    assert "verl 0.9.1 pins flash-attn ==2.8.3" in str(check_gpu_requirements(
        _requirements_copy(tmp_path, {FLASH_ATTN_WHEEL: newer_fa}))[0])
    cpu_torch = check_gpu_requirements(_requirements_copy(tmp_path, {"torch==2.11.0": "torch==2.13.0"}))
    assert [p.value for p in cpu_torch][:1] == ["torch==2.13.0"]
    assert "verl 0.9.1 pins torch ==2.11.0 in extra(s)" in str(cpu_torch[0]) and "vllm" in str(cpu_torch[0])
    # a CUDA-tagged pin is its release: no problem from verl's metadata
    assert check_gpu_requirements(_requirements_copy(tmp_path, {"torch==2.11.0": "torch==2.11.0+cu130"})) == []
    newer = [str(p) for p in check_gpu_requirements(_requirements_copy(tmp_path, {"transformers==5.9.0": "transformers==5.11.0"}))]
    assert len(newer) == 2 and "pins transformers ==5.9.0" in newer[0] and "requires transformers" in newer[1]
    ranged = check_gpu_requirements(_requirements_copy(tmp_path, {"numpy==2.3.5": "numpy>=2"}))
    assert [p.value for p in ranged] == ["numpy>=2"]


def test_public_versions():
    assert public_version("2.11.0+cu130") == "2.11.0"
    assert public_version("2.8.3+cu130torch2.11") == "2.8.3"
    assert public_version("0.24.0") == "0.24.0"
    pins, problems = read_requirements(GPU_REQUIREMENTS)
    [fa] = [p for p in pins if p.name == "flash-attn"]
    assert problems == [] and (fa.version, fa.public) == ("2.8.3+cu130torch2.11", "2.8.3")


def test_installed_cuda_tagged_build_is_its_release(tmp_path):
    """This venv's torch reports 2.13.0+cpu, a build tag as a GPU machine's 2.11.0+cu130 is: a pin of the
    release accepts it, a pin of another release does not."""
    import importlib.metadata

    assert importlib.metadata.version("torch") == "2.13.0+cpu"
    same = _requirements_copy(tmp_path, {"torch==2.11.0": "torch==2.13.0"})
    assert "torch==2.13.0" not in {p.value for p in check_installed_versions(same)}
    tagged = _requirements_copy(tmp_path, {"torch==2.11.0": "torch==2.13.0+cu130"})
    assert "torch==2.13.0+cu130" not in {p.value for p in check_installed_versions(tagged)}
    other = _requirements_copy(tmp_path, {"torch==2.11.0": "torch==2.12.0"})
    assert "torch==2.12.0" in {p.value for p in check_installed_versions(other)}


# ---- make check-gpu-deps: wheels only -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_index(tmp_path_factory):
    """A folder of real distributions built here with setuptools, offline: relate-probe-wheel 1.0 as a wheel,
    relate-probe-pure 1.0 (pure Python) and relate-probe-c 1.0 (a C extension) as source distributions only."""
    root = tmp_path_factory.mktemp("index")
    dist = root / "dist"
    for name, command in (("relate-probe-wheel", "bdist_wheel"), ("relate-probe-pure", "sdist"),
                          ("relate-probe-c", "sdist")):
        src = root / name
        src.mkdir()
        module = name.replace("-", "_")
        if name == "relate-probe-c":
            (src / f"{module}.c").write_text(
                "#include <Python.h>\nstatic struct PyModuleDef m = {PyModuleDef_HEAD_INIT, \"%s\", 0, -1, 0};\n"
                "PyMODINIT_FUNC PyInit_%s(void) { return PyModule_Create(&m); }\n" % (module, module))
            body = f"ext_modules=[Extension({module!r}, [{module + '.c'!r}])]"
        else:
            (src / f"{module}.py").write_text("VALUE = 1\n")
            body = f"py_modules=[{module!r}]"
        (src / "setup.py").write_text(f"from setuptools import Extension, setup\nsetup(name={name!r}, version='1.0', "
                                      f"{body})\n")
        subprocess.run([sys.executable, "setup.py", "-q", command, "-d", str(dist)], cwd=src, check=True,
                       capture_output=True, timeout=120)
    assert sorted(p.name for p in dist.iterdir()) == ["relate_probe_c-1.0.tar.gz", "relate_probe_pure-1.0.tar.gz",
                                                      "relate_probe_wheel-1.0-py3-none-any.whl"]
    return dist


def test_gpu_deps_refuses_what_would_be_compiled(local_index, tmp_path):
    import json

    from relate_tools.gpu_requirements import check_report, resolve_gpu_set

    offline = ["--no-index", "--find-links", str(local_index)]
    ok = tmp_path / "ok.txt"
    ok.write_text("relate-probe-wheel==1.0\nrelate-probe-pure==1.0\n")
    problems, resolved, built = resolve_gpu_set(ok, tmp_path / "report.json", offline)
    assert problems == [] and resolved == {"relate-probe-wheel": "1.0", "relate-probe-pure": "1.0"}
    assert built == ["relate_probe_pure-1.0-py3-none-any.whl"]  # an sdist, but no compiler: accepted, and said
    compiled = tmp_path / "compiled.txt"
    compiled.write_text("relate-probe-wheel==1.0\nrelate-probe-c==1.0\n")
    problems, _, _ = resolve_gpu_set(compiled, None, offline)
    assert [(p.key, p.value) for p in problems] == [("compiled.txt:2", "relate-probe-c==1.0")]
    assert "compiled wheel (relate_probe_c-1.0-cp3" in str(problems[0])
    assert "needs a compiler" in str(problems[0]) and "prebuilt wheel" in str(problems[0])
    # A report made without --only-binary (pip builds the sdist's metadata) is refused by its file type.
    report = tmp_path / "sdist-report.json"
    subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-build-isolation",
                    "-q", "--report", str(report), *offline, "-r", str(compiled)], check=True, capture_output=True,
                   timeout=300)
    found, _ = check_report(json.loads(report.read_text()), compiled)
    assert [p.value for p in found] == ["relate-probe-c==1.0"]
    assert "relate_probe_c-1.0.tar.gz" in str(found[0]) and "needs a compiler" in str(found[0])


def test_gpu_deps_cli_names_flash_attn_from_the_index(tmp_path):
    """flash-attn 2.8.3 as the old line had it: the index holds only its sdist, so `make check-gpu-deps` fails and
    says what to do (asks the package index, as `make install` does)."""
    old = _requirements_copy(tmp_path, {FLASH_ATTN_WHEEL: "flash-attn==2.8.3"})
    only = tmp_path / "only" / "requirements-gpu.txt"
    only.parent.mkdir()
    only.write_text("flash-attn==2.8.3\neinops==0.8.2\n")
    proc = subprocess.run([sys.executable, "-m", "relate_tools.gpu_requirements", "gpu-deps", str(only)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "requirements-gpu.txt:1='flash-attn==2.8.3': no wheel for CPython 3.12 on Linux x86_64" in proc.stderr
    assert "its build failed here" in proc.stderr
    assert "needs a compiler" in proc.stderr and "verl 0.9.1's install docs name the flash-attn 2.8.3 wheel" in proc.stderr
    assert check_gpu_requirements(old) == []  # pinned and agreeing with verl: only the resolve can see it


def test_requirements_cli(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "relate_tools.gpu_requirements", "requirements"], cwd=REPO,
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and "every line pinned" in ok.stdout, ok.stderr[-2000:]
    bad = _requirements_copy(tmp_path, {FLASH_ATTN_WHEEL: "flash-attn"})
    fail = subprocess.run([sys.executable, "-m", "relate_tools.gpu_requirements", "requirements", str(bad)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert fail.returncode == 1 and "requirements-gpu.txt:" in fail.stderr and "'flash-attn'" in fail.stderr
