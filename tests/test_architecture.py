"""The package's shape, read from its source with an AST walk (no module is imported).

Every ``import`` and ``from ... import`` of every module under shmfetch/ counts: those at the top, those
inside functions (lazy imports) and those under ``if TYPE_CHECKING:`` (a type is a dependency too);
relative imports are resolved against the importing module's package. From these arrows the tests check
the layering agreed in CONTRACTS.md: no import circles, no arrow from a lower rank to a higher one, only
the ground modules directly in shmfetch/, short functions, and no private name of shmfetch used by the
scripts in contrib/ and tools/.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "shmfetch"

# The layering, low to high. A module may import from its own package or from a LOWER rank. The modules
# directly in shmfetch/ are the ground: they may import one another (without circles), nothing above.
GROUND = "<ground>"
RANKS: dict[str, int] = {
    GROUND: 0,  # shmfetch/_version, protocol, config, options, job, intake
    "ipc": 1,  # rings, control segment, names, membarrier, fault points
    "fetch": 2,  # the Fetcher: transport, redirects, retries, capped reads, sniffing
    "extract": 3,  # body -> Outcome: html, main text, page fields, evaluation
    "worker": 4,  # the worker process
    "frontier": 5,  # admission: cache -> robots -> politeness
    "dispatch": 6,  # dispatcher, worker handles, collector
    "crawl": 7,  # crawls: rules, scope, seen set, the queue of each crawl
    "cluster": 8,  # Redis Streams front and client
    "fronts": 9,  # unix socket, HTTP, metrics
    "master": 10,  # arbiter, supervisor, stats, pidfile
    "api": 11,  # cli, client
    "testing": 12,  # the harness shared by tests and tools
}
# shmfetch/__init__.py and shmfetch/__main__.py are the facade: they may import anything, and nothing
# inside the package may import them (an arrow into the facade points above every rank).
FACADE = {"shmfetch", "shmfetch.__main__"}
GROUND_MODULES = {"__init__", "__main__", "_version", "config", "options", "protocol", "job", "intake"}
MAX_TOP_LEVEL_MODULES = 8
MAX_FUNCTION_LINES = 60


# -- reading the imports -----------------------------------------------------------------------------------


def module_name(path: Path, root: Path = REPO) -> str:
    """``shmfetch/ipc/ring.py`` -> ``shmfetch.ipc.ring``; a package's ``__init__.py`` -> the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(module: str, source: str, is_package: bool) -> Iterator[str]:
    """Every dotted name ``module`` imports, anywhere in its source, relative imports made absolute.

    ``from A import b`` yields ``A.b`` (b may be a submodule or a name in A: ``owner`` sorts it out)."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            yield from (f"{base}.{alias.name}" for alias in node.names)


def owner(name: str, modules: set[str]) -> str | None:
    """The module of ours that ``name`` (a dotted import) loads: its longest prefix that is a module."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of shmfetch it imports (itself excluded)."""
    paths = package_modules()
    modules = set(paths)
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        targets = {owner(n, modules) for n in imported_names(name, path.read_text(), path.name == "__init__.py")}
        graph[name] = {t for t in targets if t is not None and t != name}
    return graph


# -- judging them -----------------------------------------------------------------------------------------


def role(module: str) -> str:
    """The package a module belongs to (``ipc``, ``fetch``, ...), GROUND for shmfetch/*.py, or "facade"."""
    if module in FACADE:
        return "facade"
    parts = module.split(".")
    if len(parts) == 2 and (PACKAGE / f"{parts[1]}.py").exists():
        return GROUND
    return parts[1]


def upward_arrows(graph: dict[str, set[str]]) -> list[str]:
    """Every arrow from a module to one of another package whose rank is not lower."""
    bad = []
    for src, targets in sorted(graph.items()):
        if role(src) == "facade":
            continue
        for dst in sorted(targets):
            if role(dst) == role(src):
                continue
            if role(dst) == "facade":
                bad.append(f"{src} -> {dst} (the facade)")
            elif RANKS[role(dst)] >= RANKS[role(src)]:
                bad.append(f"{src} -> {dst} (rank {RANKS[role(src)]} -> {RANKS[role(dst)]})")
    return bad


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan): each holds an import circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The arrows between packages (the facade left out: it sits above them all)."""
    out: dict[str, set[str]] = {}
    for src, targets in graph.items():
        if role(src) != "facade":
            out.setdefault(role(src), set()).update(
                role(t) for t in targets if role(t) not in ("facade", role(src))
            )
    return out


def long_functions(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
            if lines > MAX_FUNCTION_LINES:
                yield f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {lines} lines"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(source: str) -> Iterator[str]:
    """Private names of shmfetch a script uses: imported (``from shmfetch.x import _y``, ``shmfetch._m``) or
    reached as an attribute of something it imported from shmfetch (``ring._HEADER``, ``Frontier._heap``)."""
    bound: set[str] = set()
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "shmfetch":
                    if any(_private(p) for p in alias.name.split(".")):
                        yield f"line {node.lineno}: import {alias.name}"
                    bound.add(alias.asname or "shmfetch")
        elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == "shmfetch":
            for alias in node.names:
                if any(_private(p) for p in [*node.module.split("."), alias.name]):  # type: ignore[union-attr]
                    yield f"line {node.lineno}: from {node.module} import {alias.name}"
                bound.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in bound:
                yield f"line {node.lineno}: {ast.unparse(node)}"


# -- the checks on shmfetch/ -------------------------------------------------------------------------------


def test_every_package_has_a_rank():
    unranked = {role(m) for m in package_modules()} - set(RANKS) - {"facade"}
    assert not unranked, f"packages missing from the rank table (add them to RANKS and CONTRACTS.md): {unranked}"


def test_no_import_circles():
    graph = import_graph()
    by_module = circles(graph)
    by_package = circles(package_graph(graph))
    assert not by_module and not by_package, (
        "import circles between modules:\n"
        + "\n".join("  " + " <-> ".join(c) for c in by_module)
        + "\nbetween packages:\n"
        + "\n".join("  " + " <-> ".join(c) for c in by_package)
    )


def test_imports_run_from_higher_ranks_to_lower_ones_only():
    bad = upward_arrows(import_graph())
    assert not bad, "imports from a lower rank to a higher one:\n  " + "\n  ".join(bad)


def test_only_the_ground_modules_sit_directly_in_the_package():
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert len(top) <= MAX_TOP_LEVEL_MODULES and top <= GROUND_MODULES, (
        f"modules directly in shmfetch/ that belong in a package named for their role: "
        f"{sorted(top - GROUND_MODULES)} ({len(top)} modules; at most {MAX_TOP_LEVEL_MODULES}: "
        f"{sorted(GROUND_MODULES)})"
    )


def test_no_function_is_longer_than_60_lines():
    bad = [line for path in sorted(PACKAGE.rglob("*.py")) for line in long_functions(path)]
    assert not bad, f"functions over {MAX_FUNCTION_LINES} lines:\n  " + "\n  ".join(bad)


def test_contrib_and_tools_use_no_private_name_of_shmfetch():
    scripts = sorted([*(REPO / "contrib").rglob("*.py"), *(REPO / "tools").rglob("*.py")])
    bad = [f"{p.relative_to(REPO)} {use}" for p in scripts for use in private_uses(p.read_text())]
    assert not bad, "private names of shmfetch used outside the package:\n  " + "\n  ".join(bad)


# -- the checks can fail: each on a small case of what it must catch --------------------------------------


def test_reader_sees_lazy_relative_and_type_only_imports():
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import cache\n"
        "from ..config import Config\n"
        "if TYPE_CHECKING:\n"
        "    from ..dispatch.dispatcher import Dispatcher\n"
        "def fetch_robots():\n"
        "    from ..fetch.fetcher import Fetcher\n"
        "    import shmfetch.ipc.ring\n"
    )
    modules = {
        "shmfetch.frontier.cache", "shmfetch.config", "shmfetch.dispatch.dispatcher", "shmfetch.fetch.fetcher",
        "shmfetch.ipc.ring", "shmfetch.frontier", "shmfetch.dispatch", "shmfetch.fetch", "shmfetch.ipc",
    }  # fmt: skip
    found = {owner(n, modules) for n in imported_names("shmfetch.frontier.robots", source, False)} - {None}
    assert found == modules - {"shmfetch.frontier", "shmfetch.dispatch", "shmfetch.fetch", "shmfetch.ipc"}
    # In a package's __init__, "." is the package itself.
    assert set(imported_names("shmfetch.ipc", "from .ring import Ring\n", True)) == {"shmfetch.ipc.ring.Ring"}


def test_judges_flag_upward_arrows_circles_and_private_uses():
    graph = {
        "shmfetch.config": {"shmfetch.cluster.streams"},  # ground -> rank 8: upward
        "shmfetch.cluster.streams": {"shmfetch.config"},  # rank 8 -> ground: fine, but a circle with the above
        "shmfetch.fronts.http": {"shmfetch"},  # into the facade
        "shmfetch.master.arbiter": {"shmfetch.ipc.ring", "shmfetch.master.pidfile"},  # down, and own package
    }
    assert upward_arrows(graph) == [
        "shmfetch.config -> shmfetch.cluster.streams (rank 0 -> 8)",
        "shmfetch.fronts.http -> shmfetch (the facade)",
    ]
    assert circles(graph) == [["shmfetch.cluster.streams", "shmfetch.config"]]
    assert circles(package_graph(graph)) == [["<ground>", "cluster"]]
    script = (
        "import shmfetch.ipc.ring\nfrom shmfetch.frontier.admission import Frontier, _Entry\n"
        "from shmfetch import Client\nx = shmfetch.ipc.ring._HEADER\ny = Frontier._heap\nz = Client.__name__\n"
    )
    assert [u.split(": ", 1)[1] for u in private_uses(script)] == [
        "from shmfetch.frontier.admission import _Entry",
        "shmfetch.ipc.ring._HEADER",
        "Frontier._heap",
    ]


def test_contrib_and_tools_import_nothing_from_the_tests():
    """What tools and contrib scripts share with the tests lives in shmfetch/testing/, never in tests/."""
    bad = []
    for path in sorted([*(REPO / "tools").glob("*.py"), *(REPO / "contrib").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            bad += [f"{path.relative_to(REPO)}: {n}" for n in names if n == "tests" or n.startswith("tests.")]
    assert not bad, "tools importing the tests:\n  " + "\n  ".join(bad)


@pytest.mark.parametrize("tool", sorted(p.name for p in (REPO / "tools").glob("*.py")))
def test_every_tool_starts(tool):
    """Each tool's imports resolve and its --help answers: a moved module breaks the tool, not a benchmark
    run an hour later."""
    p = subprocess.run(
        [sys.executable, str(REPO / "tools" / tool), "--help"], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0, p.stderr[-2000:]
