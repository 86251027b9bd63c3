"""The installed package stack against the lock file (requirements/lock.txt).

`python -m harness.stack [--lock FILE]` prints the versions of the packages that can change scores
(`provenance.SCORE_PACKAGES`) and every installed package whose version differs from the lock: the
drift environment (`tox -e drift`) and scripts/update-lock.sh print it, and tests/test_lock.py checks
that the locked environment has no difference.
"""
from __future__ import annotations

import argparse
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .provenance import SCORE_PACKAGES

LOCK = Path(__file__).resolve().parent.parent / "requirements" / "lock.txt"
TORCH = "torch.txt"  # beside the lock: torch's release, pinned apart because its build is the machine's


def canonical(name: str) -> str:
    """PEP 503 name: lm_eval, lm-eval and LM.Eval are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked(path=LOCK) -> dict[str, str]:
    """{canonical name: version} of every `name==version` line of a lock file and of torch.txt beside it."""
    path, pins = Path(path), {}
    lines = [(path, n, line) for n, line in enumerate(path.read_text().splitlines(), start=1)]
    if (path.parent / TORCH).is_file():
        lines += [(path.parent / TORCH, n, line)
                  for n, line in enumerate((path.parent / TORCH).read_text().splitlines(), start=1)]
    for path, number, line in lines:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, pinned = line.partition("==")
        if not sep or not pinned.strip():
            raise ValueError(f"{path}:{number}: expected name==version, got {line!r}")
        pins[canonical(name.strip())] = pinned.strip()
    return pins


def installed_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def differences(pins: dict[str, str]) -> list[str]:
    """'name: locked X, installed Y' for every pinned package whose installed release is another (a local
    build tag such as torch's +cpu is the machine's, not a version difference)."""
    out = []
    for name, pinned in sorted(pins.items()):
        have = installed_version(name)
        if (have or "").split("+")[0] != pinned:
            out.append(f"{name}: locked {pinned}, installed {have or 'none'}")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.stack", description=__doc__.splitlines()[0])
    parser.add_argument("--lock", default=str(LOCK), help="the lock file to compare with (default: %(default)s)")
    args = parser.parse_args(argv)
    pins = locked(args.lock)
    print("packages that can change scores:")
    for name in SCORE_PACKAGES:
        print(f"  {name} {installed_version(name) or 'not installed'} (locked {pins.get(canonical(name), 'none')})")
    diff = differences(pins)
    print(f"{len(diff)} installed package(s) differ from {args.lock}" + (":" if diff else ""))
    for line in diff:
        print("  " + line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
