"""bench/final_fit.py on a real search: the best model's test accuracy before and after each schedule's final fit."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from nas.cli import main

ROOT = Path(__file__).parents[2]
SMALL = ["data.dataset=digits", "train.epochs=1", "train.min_steps=0", "search.initial_width=8", "search.max_models=2"]


@pytest.mark.slow
def test_the_bench_measures_the_searched_model_and_both_schedules(mlflow_uri: str, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_final_fit", ROOT / "bench" / "final_fit.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)

    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    args = [x for s in SMALL for x in ("--set", s)]
    assert main(["search", "--local", "--name", "ff", *args]) == 0
    final = {"epochs": 1, "learning_rate": 0.001}
    row = bench.one_search(mlflow_uri, "ff", final, range(2))
    assert row["search"] == "ff" and row["model"].startswith("m") and row["train_examples"] > 0
    assert 0 < row["searched"] <= 1
    for schedule in ("constant", "cosine"):
        assert len(row[schedule]) == 2 and all(0 < a <= 1 for a in row[schedule])
    again = bench.one_search(mlflow_uri, "ff", final, range(1))
    assert again["cosine"] == row["cosine"][:1] and again["searched"] == row["searched"]  # seeded: repeatable
    page = bench.page([row], final, range(2))
    mean = np.mean(row["cosine"]) - row["searched"]
    assert f"| ff | {row['model']} |" in page and f"Mean change with `cosine`: {100 * mean:+.2f} points" in page
