"""The folder tree is the architecture (#22): every import goes down the declared floors, and no module imports
itself back through others.

Each module of harness/, methods/, tasks/ and clbench/ is read with `ast` (nothing is imported); every import
counts, also one inside a function (a late import is still a dependency: it only moves the failure to run time).
A harness subpackage is one unit (`harness.run`), harness's own top-level modules (cli, sandbox_child, stack:
the programs) are the unit `harness`, and tasks/, methods/ and clbench/ are a unit each. A unit may import
from its own folder and from units on lower floors, never from its own floor or above. docs/architecture.md
tells what each floor is for.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "methods", "tasks", "clbench")

# Bottom to top. Units on one floor do not import each other.
FLOORS = [
    {"harness.core"},  # errors, typed configs, YAML/JSON reading, did-you-mean: what everything below shares
    {"tasks"},  # the data: domains, items, prompts, code execution
    {"harness.model"},  # a model and its tokenizer: loading, device and precision, scoring, decoding
    {"methods", "harness.integrations"},  # the methods; lm-eval and TensorBoard
    {"harness.spec", "harness.metrics"},  # what a run is (configs, RunSpec, protocol cards); what the numbers are
    {"harness.store"},  # results on disk
    {"harness.run", "harness.report"},  # one run; the leaderboard, tables, figures from the store
    {"harness.sweep"},  # many runs: sweeps on Ray, tuning
    {"harness.submit", "clbench"},  # clbench submit; the Python API
    {"harness"},  # the programs: cli, sandbox_child, stack
]


def modules(root: Path = ROOT) -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: dict) -> list[tuple[str, int]]:
    """(module imported, line) for every import statement of the module, resolved to a module of `known`."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parent + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in dict.fromkeys(targets):
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.append((target, node.lineno))
    return out


def unit(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "harness" and len(parts) > 2:
        return ".".join(parts[:2])  # harness.<subpackage>.<module>
    if parts[0] == "harness" and len(parts) == 2 and (ROOT / "harness" / parts[1]).is_dir():
        return module  # a subpackage's __init__
    return parts[0]


def graph(root: Path = ROOT) -> tuple[dict, dict]:
    known = modules(root)
    return known, {m: imports(m, p, known) for m, p in known.items()}


def cycles(edges: dict) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w, _ in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def shortest_cycle(edges: dict, start: str) -> list[str]:
    """start -> ... -> start, by the fewest imports."""
    paths, queue = {start: [start]}, [start]
    for v in queue:
        for w, _ in edges[v]:
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    return []


def floor_of(u: str) -> int | None:
    return next((i for i, units in enumerate(FLOORS) if u in units), None)


def test_every_folder_has_a_floor():
    known, _ = graph()
    undeclared = sorted({unit(m) for m in known} - set().union(*FLOORS))
    assert not undeclared, f"place these in FLOORS (and in docs/architecture.md): {undeclared}"


def test_imports_go_down_the_floors():
    known, edges = graph()
    wrong = []
    for m, targets in sorted(edges.items()):
        for target, line in targets:
            a, b = unit(m), unit(target)
            if a != b and not (floor_of(b) is not None and floor_of(a) is not None and floor_of(b) < floor_of(a)):
                wrong.append(f"{known[m].relative_to(ROOT)}:{line}: {a} (floor {floor_of(a)}) imports {target} "
                             f"({b}, floor {floor_of(b)})")
    assert not wrong, "imports that do not go down:\n" + "\n".join(wrong)


def test_no_module_imports_itself_back():
    _, edges = graph()
    found = cycles(edges)
    lines = []
    for component in found:
        rings = {}
        for m in component:
            ring = shortest_cycle(edges, m)[:-1]
            first = ring.index(min(ring))
            rings.setdefault(tuple(ring[first:] + ring[:first]), None)
        lines.append(f"{', '.join(component)}:")
        lines += [f"    {' -> '.join(ring + ring[:1])}" for ring in rings]
    assert not found, "import cycles (late imports count):\n" + "\n".join(lines)


def documented_imports() -> dict[str, set[str]]:
    """docs/architecture.md's floor table: unit -> the units its 'imports from (today)' column names."""
    lines = (ROOT / "docs" / "architecture.md").read_text().splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("floor  folder"))
    folder_at, role_at, at = (lines[head].index(h) for h in ("folder", "role", "imports from (today)"))
    short = {u.rpartition(".")[2]: u for units in FLOORS for u in units if u != "harness"}
    table, current = {}, None
    for line in lines[head + 1:]:
        if line.startswith("```"):
            break
        if folder := line[folder_at:role_at].strip():
            current = "harness" if folder == "harness/*.py" else folder.rstrip("/").replace("/", ".")
            table[current] = set()
        said = line[at:].strip()
        if said not in ("", "nothing", "any floor below"):
            table[current] |= {short[w.strip()] for w in said.split(",") if w.strip()}
    return table


def test_the_architecture_table_names_what_each_unit_imports():
    _, edges = graph()
    actual = {}
    for m, targets in edges.items():
        actual.setdefault(unit(m), set()).update(unit(t) for t, _ in targets if unit(t) != unit(m))
    documented = documented_imports()
    wrong = [f"{u}: the table says {sorted(documented[u])}, the code imports {sorted(actual.get(u, set()))}"
             for u in sorted(documented) if u != "harness" and documented[u] != actual.get(u, set())]
    assert not wrong, "docs/architecture.md's 'imports from (today)' column:\n" + "\n".join(wrong)
