"""bench/search_efficiency.py's no-search control and its published Fashion-MNIST split, on real data and Keras."""

from __future__ import annotations

import gzip
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import nas.data.builtin
from nas.data import load_prepared
from nas.drivers.config import load
from nas.drivers.runner import splits_for

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    path = ROOT / "bench" / "search_efficiency.py"
    spec = importlib.util.spec_from_file_location("bench_search_efficiency", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_the_published_split_keeps_the_test_file_as_the_test_set(
    bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(0)
    files = {}
    for prefix, n in (("train", 200), ("t10k", 50)):
        files[prefix] = (rng.integers(0, 256, (n, 28, 28)), rng.permutation(np.arange(n) % 10))
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", files[prefix][0])
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", files[prefix][1])
    monkeypatch.setattr(nas.data.builtin, "FASHION_MNIST_DIR", tmp_path)
    splits = load_prepared(bench.official_fashion_mnist(tmp_path / "prepared", validation=40))
    assert (len(splits.y_train), len(splits.y_val), len(splits.y_test)) == (160, 40, 50)
    assert np.array_equal(np.rint(splits.x_test[..., 0] * 255), files["t10k"][0])  # as published, in order
    assert np.array_equal(splits.y_test, files["t10k"][1])
    assert np.array_equal(np.bincount(splits.y_val, minlength=10), [4] * 10)  # stratified
    seen = np.concatenate([splits.x_train, splits.x_val])[..., 0] * 255
    assert sorted(map(bytes, np.rint(seen).astype(np.uint8))) == sorted(map(bytes, files["train"][0].astype(np.uint8)))


def test_the_control_trains_the_initial_network_until_the_budget(bench: ModuleType) -> None:
    config = load(ROOT / "params.yaml", ["data.dataset=digits"])
    splits = splits_for(config)
    budget = 25.0  # two epochs fit even when the first, which warms Keras up, takes 10 s on a loaded machine
    result = bench.run_control(0, budget, splits, config)
    seconds = [s for s, _, _ in result["curve"]]
    assert len(seconds) > 1 and seconds == sorted(seconds)
    assert seconds[-1] <= budget * 1.2  # no epoch starts that would end well after the budget
    assert [key for _, _, key in result["curve"]] == [f"epoch {i + 1}" for i in range(len(seconds))]
    assert result["test_accuracy"] is not None and result["test_accuracy"] > 0.5
    assert result["parameters"] > 0


def test_the_median_curve_starts_when_every_seed_has_a_model_and_never_falls(bench: ModuleType) -> None:
    """Seeds whose first models end at 10 s (0.90), 20 s (0.92) and 30 s (0.50, a late and poor start): over only
    the seeds with a model so far the median would be 0.91 at 20 s and 0.90 at 30 s, a fall."""
    curves = [[(10.0, 0.90, "m1"), (40.0, 0.95, "m2")], [(20.0, 0.92, "m1")], [(30.0, 0.50, "m1")]]
    medians = bench.median_curve(curves, [5.0, 25.0, 30.0, 45.0])
    assert np.isnan(medians[0]) and np.isnan(medians[1])
    assert medians[2:] == [0.90, 0.92]


def test_a_page_says_which_commit_each_run_ran(bench: ModuleType, tmp_path: Path) -> None:
    """A page gathered in sittings at different commits says so: each run records the commit it ran (a git
    checkout's short hash here), and the page lists every commit with its runs, older runs as unrecorded; its
    time is the runs' seconds summed."""
    import json

    commit = bench.code_commit()
    assert commit.removesuffix("-dirty").isalnum() and len(commit.removesuffix("-dirty")) >= 7
    run = {"dataset": "digits", "method": "bayesian", "curve": [[5.0, 0.9, "m1"]], "test_accuracy": 0.9, "seconds": 600}
    rows = [{**run, "seed": 0, "commit": commit}, {**run, "seed": 1, "commit": "abc1234"}, {**run, "seed": 2}]
    runs_file = tmp_path / "page.runs.jsonl"
    runs_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bench.from_runs(runs_file, {"digits": 10.0}, {"digits": 1})
    page = (tmp_path / "page.md").read_text()
    assert f"Code: {commit} (1 run), abc1234 (1 run), unrecorded (1 run) (a commit each run recorded)." in page
    assert "30 minutes of runs in all (tables rebuilt from the per-run logs)." in page  # the runs' own seconds


def test_a_search_reports_its_best_model_and_the_ensemble_of_its_best_within_the_budget(
    bench: ModuleType, mlflow_uri: str
) -> None:
    """``run_ours`` on real digits with ``final.ensemble=2``: the ensemble is the two best models by validation
    among those that ended within the budget, and its test accuracy is that of their mean probabilities."""
    from nas.architectures.weights import load_weights
    from nas.ledger.service import SearchService
    from nas.tracking import open_store
    from nas.training.builder import predict

    config = load(ROOT / "params.yaml", ["data.dataset=digits"])
    splits = splits_for(config)
    settings = ["search.max_models=3", "search.initial_width=8", "train.min_steps=0", "final.ensemble=2"]
    result = bench.run_ours("random", "digits", "digits", 0, 600.0, 1, splits, settings)
    assert len(result["curve"]) == 3 and result["ensemble"] == bench.leaders(result["curve"], 600.0, 2)
    ranked = sorted(result["curve"], key=lambda p: (-p[1], p[0]))
    assert result["ensemble"] == [ranked[0][2], ranked[1][2]]
    service = SearchService(open_store().log("random-digits-0"))
    probabilities = [
        predict(service.state.models[i].arch, load_weights(service.weights_file(i)), splits.x_test)
        for i in result["ensemble"]
    ]
    accuracy = [float(np.mean(p.argmax(1) == splits.y_test)) for p in (probabilities[0], np.mean(probabilities, 0))]
    assert [result["test_accuracy"], result["ensemble_test_accuracy"]] == accuracy
    early = bench.leaders(result["curve"], ranked[0][0] - 1e-6, 2)  # a budget that ended just before the best did
    assert ranked[0][2] not in early and len(early) == min(2, sum(p[0] < ranked[0][0] for p in result["curve"]))
