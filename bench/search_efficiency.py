"""Search efficiency against the peers: the best validation accuracy each method reaches within the same
wall-clock budget, on the same data splits, over several seeds.

Methods: this project's ``bayesian`` (network morphism + GP), ``random`` and ``evolution`` strategies (the
plain loop on a real MLflow store: what `nas search --local` runs), and KerasTuner's
``BayesianOptimization`` and ``RandomSearch`` over a comparable skip-free CNN space (blocks of
ReLU -> BN -> Conv 3x3 -> MaxPool with searched depth and widths, GAP, Dropout, Dense, softmax), with
the same epochs per trial, batch size, learning rate and early stopping; and the no-search ``control``: the
search's initial network trained alone for the whole budget, with early stopping (patience 5). Each run
stops starting new models once its budget is spent (the last one may run over; only models that ended
within the budget count). Test accuracy: the method's best model (by validation accuracy) on the test
split, once.

``fashion_mnist_official`` is Fashion-MNIST split as published: 54,000 training and 6,000 validation images
drawn (stratified, seed 0) from the 60,000 training images, the 10,000 test images as the test split. It
goes to the searches as a prepared data folder, as a user would give it.

    .venv/bin/pip install -c constraints.txt -e ".[bench]"     # KerasTuner and tensorboard
    .venv/bin/python bench/search_efficiency.py --quick        # MNIST-5k, 1 seed, 60 s per run: ~7 minutes
    .venv/bin/python bench/search_efficiency.py     # MNIST-5k 90 s x 2 epochs, Fashion-MNIST 120 s x 1, 3 seeds (~60 min)
    # the 1,200-s comparison, one seed per call, each run appended to the runs file as it ends (--resume skips
    # the runs already there, so it can be spread over several sittings):
    .venv/bin/python bench/search_efficiency.py --datasets fashion_mnist_official --budget 1200 --epochs 3 \
        --seeds 3 --methods bayesian control evolution random kt-bayesian kt-random \
        --out bench/results/search_efficiency-fashion_mnist-1200 --resume
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).parents[1]
OURS = ("bayesian", "random", "evolution")
PEERS = ("kt-bayesian", "kt-random")
CONTROL = "control"
CONTROL_PATIENCE = 5
TARGETS = {"mnist5k": 0.95, "fashion_mnist": 0.88, "fashion_mnist_official": 0.88, "digits": 0.9}
FRACTIONS = (0.25, 0.5, 1.0)

Curve = list[tuple[float, float, str]]  # (seconds since start, validation accuracy, model) of each model that ended


def code_commit() -> str:
    """The commit of the code a run ran (short), ``-dirty`` when tracked files differ from it, ``unknown`` outside
    a git checkout: each run records it, so a page gathered in several sittings says what each side ran."""
    try:

        def git(*args: str) -> str:
            return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout

        commit = git("rev-parse", "--short", "HEAD").strip()
        return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no").strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def commits_line(runs: Sequence[dict[str, Any]]) -> str:
    """Which commits the ``runs`` ran, with how many runs each (``unrecorded`` for runs from before it was kept)."""
    counts = Counter(r.get("commit", "unrecorded") for r in runs)
    return ", ".join(f"{c} ({n} run{'s' if n > 1 else ''})" for c, n in counts.items())


def run_ours(
    strategy: str,
    dataset: str,
    source: str,
    seed: int,
    budget: float,
    epochs: int,
    splits: Any,
    settings: Sequence[str] = (),
    tag: str = "",
) -> dict[str, Any]:
    """One search of this project on ``source`` (its ``data.dataset``), timed from outside, with ``settings``
    (``group.key=value``) over params.yaml, named after its strategy, dataset, seed and ``tag``; returns its curve,
    its best model's test accuracy, that of the mean of its ``final.ensemble`` best models (the searched model
    the DVC pipeline fine-tunes and registers; models that ended after the budget left out) and how many of its
    models were trained further (the leader, after a model found no time to train)."""
    from nas.architectures.weights import load_weights
    from nas.drivers.config import load, load_pipeline
    from nas.drivers.runner import run_search
    from nas.ledger.service import SearchService
    from nas.tracking import open_store
    from nas.training.builder import predict_ensemble

    sets = [
        f"data.dataset={source}",
        f"search.strategy={strategy}",
        f"search.seed={seed}",
        f"search.time_budget_s={budget}",
        "search.max_models=1000",
        f"train.epochs={epochs}",
        *settings,
    ]
    config = load(ROOT / "params.yaml", sets)
    ensemble = load_pipeline(ROOT / "params.yaml", settings)["final"]["ensemble"]
    name = f"{strategy}-{dataset}-{seed}{'-' + tag if tag else ''}"
    curve: Curve = []
    start = time.monotonic()

    def on_outcome(model: Any) -> None:
        if model.val_accuracy is not None:
            curve.append((time.monotonic() - start, float(model.val_accuracy), model.model_id))

    state = run_search(open_store(), name, config, splits, on_outcome=on_outcome)
    seconds = time.monotonic() - start
    service = SearchService(open_store().log(name))
    members = [
        (i, state.models[i].arch, load_weights(service.weights_file(i))) for i in leaders(curve, budget, ensemble)
    ]
    further = sum(m.parent_id is not None and not m.morphisms for m in state.models.values())
    test, together = (predict_ensemble(m, splits.x_test) if members else None for m in (members[:1], members))
    return {
        "curve": curve,
        "test_accuracy": accuracy(test, splits.y_test),
        "ensemble_test_accuracy": accuracy(together, splits.y_test),
        "ensemble": [i for i, _, _ in members],
        "seconds": seconds,
        "further": further,
    }


def accuracy(probabilities: np.ndarray | None, labels: np.ndarray) -> float | None:
    """The share of ``labels`` the class ``probabilities`` rank first; None for no prediction (no model)."""
    return None if probabilities is None else float(np.mean(probabilities.argmax(1) == labels))


def run_control(seed: int, budget: float, splits: Any, config: dict) -> dict[str, Any]:
    """The no-search control: the search's initial network trained alone, with early stopping (patience
    ``CONTROL_PATIENCE``) and no other limit than the wall-clock budget (no epoch starts that would end after
    it at the pace of the one before); its curve has a point per epoch."""
    from nas.architectures.initial import initial_for
    from nas.training.builder import predict
    from nas.training.fit import TrainConfig, fit, make_deterministic

    make_deterministic(seed)
    t = config["train"]
    arch = initial_for(config, splits.input_shape, splits.num_classes)
    train = TrainConfig(
        epochs=10_000,
        batch_size=t["batch_size"],
        learning_rate=t["learning_rate"],
        early_stopping_patience=CONTROL_PATIENCE,
    )
    curve: Curve = []
    start = time.monotonic()

    def on_epoch(epoch: int, logs: dict[str, float]) -> bool:
        seconds = time.monotonic() - start
        last = seconds - (curve[-1][0] if curve else 0.0)
        curve.append((seconds, logs["val_accuracy"], f"epoch {epoch + 1}"))
        return seconds + last > budget  # no epoch starts that would end after the budget at the last one's pace

    result = fit(
        arch, None, splits.x_train, splits.y_train, splits.x_val, splits.y_val, train, seed=seed, on_epoch=on_epoch
    )
    seconds = time.monotonic() - start
    kept = [p for p in curve if p[2] == f"epoch {result.kept_epoch + 1}"]
    test = None
    if kept and kept[0][0] <= budget:  # the kept weights are those of an epoch that ended within the budget
        test = float(np.mean(predict(arch, result.weights, splits.x_test).argmax(1) == splits.y_test))
    return {"curve": curve, "test_accuracy": test, "seconds": seconds, "parameters": arch.param_count}


def official_fashion_mnist(folder: Path, validation: int = 6_000) -> Path:
    """Fashion-MNIST as published, written to ``folder`` as a prepared data folder: ``validation`` images drawn
    (stratified, seed 0) from the training file for validation, the rest to train on, the test file as the test
    split."""
    from sklearn.model_selection import train_test_split

    from nas.data import Splits, fashion_mnist_parts, save_prepared

    (x, y), test = fashion_mnist_parts().values()
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=validation, stratify=y, random_state=0)
    save_prepared(Splits("fashion_mnist_official", x_train, y_train, x_val, y_val, *test), folder)
    return folder


def _kt_model(hp: Any, input_shape: tuple[int, ...], classes: int, learning_rate: float) -> Any:
    import keras

    x = inputs = keras.Input(input_shape)
    if len(input_shape) == 3:
        for i in range(hp.Int("blocks", 1, 4)):
            x = keras.layers.ReLU()(x)
            x = keras.layers.BatchNormalization(momentum=0.9)(x)
            x = keras.layers.Conv2D(hp.Choice(f"filters_{i}", [16, 32, 64, 128]), 3, padding="same")(x)
            x = keras.layers.MaxPooling2D(2, padding="same")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
    else:
        for i in range(hp.Int("layers", 1, 4)):
            x = keras.layers.Dense(hp.Choice(f"units_{i}", [32, 64, 128, 256]), activation="relu")(x)
    x = keras.layers.Dropout(hp.Choice("dropout", [0.0, 0.25, 0.5]))(x)
    x = keras.layers.Dense(hp.Choice("dense", [32, 64, 128]), activation="relu")(x)
    outputs = keras.layers.Dense(classes, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def run_keras_tuner(
    kind: str, seed: int, budget: float, epochs: int, splits: Any, config: dict, settings: Sequence[str] = ()
) -> dict[str, Any]:
    """One KerasTuner search with the same budget rule: no new trial once the budget is spent; its best trial's
    test accuracy, and that of the mean of its ``final.ensemble`` best trials (as for our searches)."""
    import keras
    import keras_tuner as kt

    from nas.drivers.config import load_pipeline

    keras.utils.set_random_seed(seed)
    curve: Curve = []
    start = time.monotonic()
    base = kt.BayesianOptimization if kind == "kt-bayesian" else kt.RandomSearch

    class Timed(base):  # type: ignore[misc, valid-type]
        def pre_create_trial(self) -> None:
            if time.monotonic() - start >= budget:
                self.oracle.max_trials = len(self.oracle.trials)  # the oracle then stops the search

        def on_trial_end(self, trial: Any) -> None:
            super().on_trial_end(trial)
            if trial.score is not None:
                curve.append((time.monotonic() - start, float(trial.score), trial.trial_id))

    t = config["train"]
    tuner = Timed(
        lambda hp: _kt_model(hp, splits.input_shape, splits.num_classes, t["learning_rate"]),
        objective="val_accuracy",
        max_trials=10_000,
        seed=seed,
        directory=tempfile.mkdtemp(prefix="kt-"),
        project_name="p",
        overwrite=True,
    )
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=t["early_stopping_patience"])
    tuner.search(
        splits.x_train,
        splits.y_train,
        validation_data=(splits.x_val, splits.y_val),
        epochs=epochs,
        batch_size=t["batch_size"],
        callbacks=[stop],
        verbose=0,
    )
    seconds = time.monotonic() - start
    ensemble = load_pipeline(ROOT / "params.yaml", settings)["final"]["ensemble"]
    models = [tuner.load_model(tuner.oracle.get_trial(t)) for t in leaders(curve, budget, ensemble)]
    probabilities = [np.asarray(m.predict(splits.x_test, verbose=0)) for m in models]
    return {
        "curve": curve,
        "test_accuracy": accuracy(probabilities[0] if models else None, splits.y_test),
        "ensemble_test_accuracy": accuracy(np.mean(probabilities, 0) if models else None, splits.y_test),
        "seconds": seconds,
    }


def best_at(curve: Curve, t: float) -> float | None:
    """Best validation accuracy among models that ended by ``t`` seconds."""
    values = [a for s, a, _ in curve if s <= t]
    return max(values) if values else None


def best_within(curve: Curve, budget: float) -> str | None:
    """The model with the best validation accuracy among those that ended within the budget (the first of ties)."""
    return next(iter(leaders(curve, budget, 1)), None)


def leaders(curve: Curve, budget: float, k: int) -> list[str]:
    """The ``k`` models with the best validation accuracy among those that ended within the budget, best first
    (of ties the one that ended first), as ``SearchState.leaders`` ranks a search's models."""
    within = sorted((-a, s, key) for s, a, key in curve if s <= budget)
    return [key for _, _, key in within[:k]]


def time_to(curve: Curve, target: float, budget: float) -> float | None:
    """Seconds until a model ended with validation accuracy >= target within the budget, or None."""
    return next((s for s, a, _ in curve if a >= target and s <= budget), None)


def _median(values: Sequence[float | None], fmt: str = ".3f", absent: str = "never") -> str:
    """The median of the values given, with their [min, max], and how many are absent (None) and why."""
    got = [v for v in values if v is not None]
    if not got:
        return "-"
    spread = f" [{min(got):{fmt}}, {max(got):{fmt}}]" if len(got) > 1 else ""
    missing = f" ({len(values) - len(got)} {absent})" if len(got) < len(values) else ""
    return f"{statistics.median(got):{fmt}}{spread}{missing}"


def summarise(runs: dict[str, list[dict[str, Any]]], budget: float, target: float) -> list[dict[str, str]]:
    rows = []
    for method, results in runs.items():
        row = {"method": method}
        for f in FRACTIONS:
            row[f"best val @{int(f * 100)}%"] = _median([best_at(r["curve"], f * budget) for r in results])
        row["test acc"] = _median([r["test_accuracy"] for r in results])
        row["test acc, ensemble"] = _median([r.get("ensemble_test_accuracy") for r in results], absent="not measured")
        trained = [1.0 if method == CONTROL else float(sum(s <= budget for s, _, _ in r["curve"])) for r in results]
        row["models"] = _median(trained, ".0f")  # the control's curve has a point per epoch of its one model
        times = [time_to(r["curve"], target, budget) for r in results]
        row[f"s to {target:g}"] = _median(times, ".0f")
        rows.append(row)
    return rows


def median_curve(curves: Sequence[Curve], grid: Sequence[float]) -> list[float]:
    """The median over seeds of the best-so-far validation accuracy at each time of ``grid``; NaN (not drawn)
    until every seed has a model ended. Non-decreasing: a median over only the seeds with a model so far could
    fall when a late seed's first model joins it."""
    at_times = zip(*[[best_at(c, t) for t in grid] for c in curves], strict=True)
    return [np.nan if None in at else float(statistics.median(at)) for at in at_times]


def plot(all_runs: dict[str, dict[str, list[dict[str, Any]]]], budgets: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(all_runs), figsize=(6 * len(all_runs), 4), squeeze=False)
    for ax, (dataset, runs) in zip(axes[0], all_runs.items(), strict=True):
        budget = budgets[dataset]
        grid = np.linspace(0, budget, 200)
        for method, results in runs.items():
            ax.step(
                grid,
                median_curve([r["curve"] for r in results], grid.tolist()),
                where="post",
                label=method,
                ls="-" if method in OURS else ":" if method == CONTROL else "--",
            )
        ax.set_title(f"{dataset}: median best-so-far over seeds")
        ax.set_xlabel("seconds")
        ax.set_ylabel("validation accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="MNIST-5k, 1 seed, 60 s per run")
    parser.add_argument("--datasets", nargs="+", default=["mnist5k", "fashion_mnist"])
    parser.add_argument("--budget", nargs="+", type=float, default=[90.0, 120.0], help="seconds per run, per dataset")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", nargs="+", type=int, default=[2, 1], help="epochs per model, per dataset")
    parser.add_argument("--methods", nargs="+", default=[*OURS, *PEERS], choices=[*OURS, *PEERS, CONTROL])
    parser.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed, first-seed + 1, ...")
    parser.add_argument("--resume", action="store_true", help="keep the runs file's runs and skip them")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="GROUP.KEY=VALUE",
        help="a setting of our searches and of the control's network",
    )
    parser.add_argument("--out", default=str(RESULTS / "search_efficiency"))
    parser.add_argument("--from-runs", metavar="JSONL", help="only rewrite the results from a .runs.jsonl")
    args = parser.parse_args()
    args.out = str(Path(args.out).resolve())  # before the runs move to a temporary working directory
    if args.quick:
        args.datasets, args.budget, args.epochs, args.seeds = ["mnist5k"], [60.0], [2], 1
        args.out += "-quick"

    def per_dataset(values: list) -> dict:
        return dict(zip(args.datasets, values * len(args.datasets) if len(values) == 1 else values, strict=False))

    budgets, epochs = per_dataset(args.budget), per_dataset(args.epochs)
    if args.from_runs:
        return from_runs(Path(args.from_runs), budgets, epochs)
    tmp = Path(tempfile.mkdtemp(prefix="nas-bench-efficiency-"))
    os.chdir(tmp)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from nas.drivers.config import load
    from nas.drivers.runner import splits_for

    all_runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    commit = code_commit()
    sources = {d: str(official_fashion_mnist(tmp / d)) if d == "fashion_mnist_official" else d for d in args.datasets}
    # --set reaches the control too: its network is the initial network of our searches with those settings
    configs = {d: load(ROOT / "params.yaml", [f"data.dataset={sources[d]}", *args.set]) for d in args.datasets}
    data = {d: splits_for(c) for d, c in configs.items()}  # every dataset loads before any run starts
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    runs_file = out.with_suffix(".runs.jsonl")  # each run as it ends: nothing lost if a later one fails
    done = (
        [json.loads(line) for line in runs_file.read_text().splitlines()] if args.resume and runs_file.exists() else []
    )
    if not args.resume:
        runs_file.write_text("")
    for dataset in args.datasets:
        config, splits, budget = configs[dataset], data[dataset], budgets[dataset]
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in args.methods}
        for r in done:
            if r["dataset"] == dataset:
                r["curve"] = [tuple(p) for p in r["curve"]]
                runs.setdefault(r["method"], []).append(r)
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for method in args.methods:  # interleaved, so machine load drifts hit every method alike
                if any(r["dataset"] == dataset and r["seed"] == seed and r["method"] == method for r in done):
                    continue
                if method in OURS:
                    result = run_ours(
                        method, dataset, sources[dataset], seed, budget, epochs[dataset], splits, args.set
                    )
                elif method == CONTROL:
                    result = run_control(seed, budget, splits, config)
                else:
                    result = run_keras_tuner(method, seed, budget, epochs[dataset], splits, config, args.set)
                run = {"dataset": dataset, "seed": seed, "method": method, "settings": args.set, "commit": commit}
                run.update(result)
                runs[method].append(run)
                with runs_file.open("a") as f:
                    f.write(json.dumps(run) + "\n")
                best = best_at(result["curve"], budget)
                print(f"{dataset} seed {seed} {method:<12} models {1 if method == CONTROL else len(result['curve']):>3}  best val "
                      f"{best if best is None else round(best, 4)}  test {result['test_accuracy']}", flush=True)  # fmt: skip
        all_runs[dataset] = runs
    write_results(all_runs, budgets, epochs, out)


def write_results(
    all_runs: dict[str, dict[str, list[dict[str, Any]]]],
    budgets: dict[str, float],
    epochs: dict[str, int],
    out: Path,
    rebuilt: bool = False,
) -> None:
    """The table (``out``.md), the runs (``out``.json) and the plot (``out``.png). The page's time is the runs'
    own seconds summed (so a page resumed over several sittings, or ``rebuilt`` from the runs file, counts all)."""
    tables = {d: summarise(runs, budgets[d], TARGETS.get(d, 0.9)) for d, runs in all_runs.items()}
    seeds = max((len(r) for runs in all_runs.values() for r in runs.values()), default=0)
    minutes = sum(r.get("seconds", 0.0) for runs in all_runs.values() for method in runs.values() for r in method) / 60
    plot(all_runs, budgets, out.with_suffix(".png"))
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, no GPU"
    lines = [
        "# Search efficiency against KerasTuner",
        "",
        f"Machine: {machine}. Run {time.strftime('%Y-%m-%d')}, "
        + f"{minutes:.0f} minutes of runs in all"
        + (" (tables rebuilt from the per-run logs). " if rebuilt else ". ")
        + f"Up to {seeds} seed(s) per method; "
        "early stopping patience, batch size and learning rate from params.yaml for every method. "
        "Budgets (wall clock per run, no new model after it) and epochs per model: "
        + ", ".join(f"{d} {b:g} s, {epochs[d]} epoch(s)" for d, b in budgets.items() if d in all_runs)
        + ". Cells: median over seeds [min, max]; `models` counts models that ended within the budget; "
        "`s to X`: seconds until a model reached validation accuracy X.",
        "",
        "Code: "
        + commits_line([r for runs in all_runs.values() for method in runs.values() for r in method])
        + " (a commit each run recorded).",
        "",
    ]
    for dataset, rows in tables.items():
        lines += [f"## {dataset}", "", "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        lines += ["| " + " | ".join(r.values()) + " |" for r in rows]
        lines.append("")
    lines.append(f"![accuracy against time]({out.with_suffix('.png').name})")
    lines += [
        "",
        "Overheads, measured by their own benchmarks in this folder: orchestration and tracking seconds per "
        "round as a share of training (`overlap.md`, `ledger.md`), replaying 1,000 events (`ledger.md`), "
        "proposal time against history size (`nb201.md`).",
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"budgets": budgets, "epochs": epochs, "runs": all_runs}, indent=1))
    print("\n".join(lines))


def from_runs(path: Path, budgets: dict[str, float], epochs: dict[str, int]) -> None:
    """Rewrite the results from a ``.runs.jsonl`` (for example of a run stopped before its end)."""
    all_runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        r["curve"] = [tuple(p) for p in r["curve"]]
        all_runs.setdefault(r["dataset"], {}).setdefault(r["method"], []).append(r)
    write_results(all_runs, budgets, epochs, path.with_suffix("").with_suffix(""), rebuilt=True)


if __name__ == "__main__":
    main()
