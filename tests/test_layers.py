"""The layers hold: only nas.tracking imports MLflow, only nas.training imports Keras or TensorFlow, only
flows/ imports Prefect, and the core packages import nothing above them."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[1]
ORDER = ["architectures", "strategy", "ledger", "report", "training", "tracking", "drivers"]  # low to high


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(folder: str) -> dict[Path, set[str]]:
    return {p: _imports(p) for p in (ROOT / folder).rglob("*.py")}


def _top(name: str) -> str:
    return name.split(".")[0]


def test_only_the_tracking_package_imports_mlflow() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p, names in {**_modules("nas"), **_modules("flows")}.items()
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
        parts = path.relative_to(ROOT / "nas").parts
        if len(parts) < 2 or parts[0] not in ORDER:
            continue
        level = ORDER.index(parts[0])
        above = sorted(
            n
            for n in names
            if n.startswith("nas.") and n.split(".")[1] in ORDER and ORDER.index(n.split(".")[1]) > level
        )
        assert above == [], f"{path.relative_to(ROOT)} imports {above}"
