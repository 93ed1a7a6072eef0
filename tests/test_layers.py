"""The layers hold: only nas.tracking imports MLflow, only nas.training imports Keras or TensorFlow, only
flows/ imports Prefect, each package of nas/ imports only those below it, only the command line (nas/cli.py)
reaches up to flows/, and no module imports itself back through others (imports inside functions count)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).parents[1]
# Low to high: a package may import those before it; nas/cli.py is above all.
ORDER = ["data", "architectures", "strategy", "ledger", "report", "training", "tracking", "drivers"]


def _imports(path: Path, run_time: bool = False) -> set[str]:
    """The absolute names ``path`` imports anywhere in it (with ``run_time``, not those under ``if TYPE_CHECKING``);
    ``from a import b`` gives ``a.b`` too where that is a module."""
    names: set[str] = set()
    for node in _walk(ast.parse(path.read_text()), run_time):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names if _path(f"{node.module}.{alias.name}")}
    return names


def _walk(node: ast.AST, run_time: bool) -> Iterator[ast.AST]:
    yield node
    for child in ast.iter_child_nodes(node):
        if not (run_time and isinstance(child, ast.If) and ast.unparse(child.test).endswith("TYPE_CHECKING")):
            yield from _walk(child, run_time)


def _path(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(*folders: str, run_time: bool = False) -> dict[Path, set[str]]:
    return {p: _imports(p, run_time) for folder in folders for p in (ROOT / folder).rglob("*.py")}


def _top(name: str) -> str:
    return name.split(".")[0]


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "nas" and len(parts) > 1 and parts[1] in ORDER else None


def test_only_the_tracking_package_imports_mlflow() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p, names in _modules("nas", "flows").items()
        if any(_top(n) == "mlflow" for n in names) and "nas/tracking" not in p.as_posix()
    ]
    assert offenders == []


def test_only_the_training_package_imports_keras_and_only_flows_import_prefect() -> None:
    keras = [p for p, n in _modules("nas").items() if {_top(x) for x in n} & {"keras", "tensorflow"}]
    assert all("nas/training" in p.as_posix() for p in keras) and keras
    prefect = [p for p, n in _modules("nas").items() if any(_top(x) == "prefect" for x in n)]
    assert prefect == []


def test_packages_import_only_downwards() -> None:
    for path, names in _modules("nas").items():
        layer = _layer(_name(path))
        if layer is None:  # nas/__init__.py and nas/cli.py, the top
            continue
        above = sorted(n for n in names if (other := _layer(n)) and ORDER.index(other) > ORDER.index(layer))
        assert above == [], f"{path.relative_to(ROOT)} imports {above}"
        assert "nas.cli" not in names, f"{path.relative_to(ROOT)} imports the command line"


def test_only_the_command_line_reaches_up_to_flows() -> None:
    up = sorted(str(p.relative_to(ROOT)) for p, n in _modules("nas").items() if any(_top(x) == "flows" for x in n))
    assert up == ["nas/cli.py"]
    assert [p for p, n in _modules("flows").items() if "nas.cli" in n] == []


def test_no_module_imports_itself_back() -> None:
    graph = {
        _name(p): {n for n in names if _top(n) in {"nas", "flows"} and _path(n) and n != _name(p)}
        for p, names in _modules("nas", "flows", run_time=True).items()
    }
    graph = {m: {n for n in deps if n in graph and not m.startswith(n + ".")} for m, deps in graph.items()}
    assert _cycles(graph) == []


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    """Every way back to a module from itself, one per module it starts from."""
    cycles = []
    for start in sorted(graph):
        seen, stack = set(), [(start, [start])]
        while stack:
            node, trail = stack.pop()
            for nxt in sorted(graph[node]):
                if nxt == start:
                    cycles.append(" -> ".join([*trail, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
    return cycles


def test_the_checks_see_an_upward_import_a_type_only_import_and_a_cycle(tmp_path: Path) -> None:
    """The checks above would fail on what they look for (they are not vacuous)."""
    low = tmp_path / "low.py"
    low.write_text("def f():\n    from nas.drivers import runner\n")
    assert "nas.drivers.runner" in _imports(low) and _layer("nas.drivers.runner") == "drivers"
    assert ORDER.index("drivers") > ORDER.index("ledger")
    low.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from nas.cli import main\n")
    assert "nas.cli" in _imports(low) and "nas.cli" not in _imports(low, run_time=True)
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a -> b -> c -> a", "b -> c -> a -> b",
                                                                         "c -> a -> b -> c"]  # fmt: skip


def test_no_module_of_nas_or_flows_is_over_500_lines() -> None:
    """One concept per module: a module that grows past 500 lines holds more than one and is split by concept."""
    long = {
        str(p.relative_to(ROOT)): n for p in _modules("nas", "flows") if (n := len(p.read_text().splitlines())) > 500
    }
    assert long == {}
