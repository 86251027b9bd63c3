"""The installed package stack against the lock file (requirements/lock.txt).

`python -m harness.stack [--lock FILE]` prints the versions of the packages that can change scores
(`provenance.SCORE_PACKAGES`) and every installed package whose version differs from the lock: the
drift environment (`tox -e drift`) and scripts/update-lock.sh print it, and tests/test_stack.py checks
that the locked environment has no difference. `--split FREEZE` writes a `pip freeze` as the next lock:
the packages only the optional extras need (EXTRAS: tracking) to their own file, the rest to lock.txt.
"""
from __future__ import annotations

import argparse
import re
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path

from .store.provenance import SCORE_PACKAGES

LOCK = Path(__file__).resolve().parent.parent / "requirements" / "lock.txt"
TORCH = "torch.txt"  # beside the lock: torch's release, pinned apart because its build is the machine's
# beside the lock: each optional extra's packages beyond the lock (not in the default install, in tox's)
EXTRAS = {"tracking": "tracking.txt"}


def canonical(name: str) -> str:
    """PEP 503 name: lm_eval, lm-eval and LM.Eval are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked(path=LOCK) -> dict[str, str]:
    """{canonical name: version} of every `name==version` line of a lock file and of torch.txt and the extras'
    files beside it."""
    path, pins = Path(path), {}
    lines = []
    for file in (path, *(path.parent / name for name in (TORCH, *EXTRAS.values()))):
        if file == path or file.is_file():
            lines += [(file, n, line) for n, line in enumerate(file.read_text().splitlines(), start=1)]
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


def needed(requirements: list[str]) -> set[str]:
    """Canonical names of the installed distributions that `requirements` need, themselves included, transitively:
    each package's declared requirements, markers evaluated here, extras followed."""
    from packaging.requirements import Requirement

    todo, seen, names = [Requirement(r) for r in requirements], set(), set()
    while todo:
        req = todo.pop()
        key = (canonical(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        names.add(key[0])
        try:
            declared = requires(req.name) or []
        except PackageNotFoundError:
            continue
        for text in declared:
            sub = Requirement(text)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in ("", *req.extras)):
                todo.append(sub)
    return names


def split(freeze: list[str], project: str = "clbench") -> dict[str, list[str]]:
    """The `name==version` lines of a freeze by file: each extra's (EXTRAS) the packages that only it needs (beyond
    the project with its test extra), lock.txt the rest. The project itself is left out, however it was installed
    (tox's editable install freezes as `clbench @ file:///...editable...whl`, which --exclude-editable keeps)."""
    base = needed([f"{project}[test]"])
    only = {extra: needed([f"{project}[{extra}]"]) - base for extra in EXTRAS}
    out = {"lock.txt": [], **{file: [] for file in EXTRAS.values()}}
    for line in freeze:
        name = canonical(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line).group(1))
        if name != canonical(project):
            out[next((EXTRAS[e] for e, names in only.items() if name in names), "lock.txt")].append(line)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.stack", description=__doc__.splitlines()[0])
    parser.add_argument("--lock", default=str(LOCK), help="the lock file to compare with (default: %(default)s)")
    parser.add_argument("--split", metavar="FREEZE", help="write the `pip freeze` in FREEZE as <file>.new beside the "
                        "lock for lock.txt and each extra's file, each with its file's header comments")
    args = parser.parse_args(argv)
    if args.split:
        folder = Path(args.lock).parent
        lines = [line for line in Path(args.split).read_text().splitlines() if line.strip()]
        for file, pins in split(lines).items():
            header = [line for line in (folder / file).read_text().splitlines() if line.startswith("#")]
            (folder / f"{file}.new").write_text("\n".join(header + pins) + "\n")
        return 0
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
