"""Ledger overhead: time to append one event to the MLflow SQLite store and to replay 1,000 events,
against the time of one training epoch on the default data.

    .venv/bin/python bench/ledger.py            # 1,000 events, about 3 minutes
    .venv/bin/python bench/ledger.py --quick    # 200 events
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n_events = 200 if args.quick else args.events

    from nas.config import load
    from nas.events import ArchitectureProposed, SearchStarted, TrainingCompleted, TrainingStarted
    from nas.initial import initial_architecture
    from nas.weights import init_weights, save_weights

    tmp = Path(tempfile.mkdtemp(prefix="nas-bench-ledger-"))
    os.chdir(tmp)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    from nas.event_log.mlflow import MlflowEventLog

    config = load(Path(__file__).parents[1] / "params.yaml")
    arch = initial_architecture((28, 28, 1), 10, width=config["search"]["initial_width"])
    weights = tmp / "weights.npz"
    save_weights(weights, init_weights(arch, np.random.default_rng(0)))
    epochs = [{"loss": 1.0, "val_loss": 0.9, "accuracy": 0.7, "val_accuracy": 0.8}] * config["train"]["epochs"]

    log = MlflowEventLog("bench")
    sid = "bench"
    log.append([SearchStarted(sid, 1, sid, config, "f" * 64, "bench", 0, arch.to_json())], 0)
    seq, model, times, kinds = 1, 0, [], []
    while seq < n_events:
        model += 1
        mid = f"m{model}"
        for make in (
            lambda s, mid=mid: ArchitectureProposed(
                sid, s, mid, None, [], arch.id, arch.to_json(), "bayesian", 0.9, 0.8, 0.04, 700, 2.0
            ),
            lambda s, mid=mid: TrainingStarted(sid, s, mid),
            lambda s, mid=mid: TrainingCompleted(sid, s, mid, arch.id, 0.8, arch.param_count, epochs, 0.0, 30.0),
        ):
            if seq >= n_events:
                break
            event = make(seq + 1)
            attach = {seq + 1: {"weights.npz": weights}} if isinstance(event, TrainingCompleted) else None
            start = time.perf_counter()
            log.append([event], seq, attach)
            times.append(time.perf_counter() - start)
            kinds.append(type(event).__name__)
            seq += 1
    start = time.perf_counter()
    replayed = MlflowEventLog("bench").read()
    replay_s = time.perf_counter() - start
    assert len(replayed) == n_events

    from nas.data import load_splits
    from nas.keras_train import TrainConfig, make_deterministic, train

    make_deterministic(0)
    data = load_splits("mnist5k")
    result = train(
        arch, None, data.x_train, data.y_train, data.x_val, data.y_val, TrainConfig(epochs=2, early_stopping_patience=0)
    )
    epoch_s = result.seconds / 2
    per_kind = {k: statistics.mean(t for t, kk in zip(times, kinds, strict=True) if kk == k) for k in set(kinds)}
    round_s = sum(per_kind.values())  # proposed + started + completed (with weights)
    train_s = epoch_s * config["train"]["epochs"]
    figures = {
        "events": n_events,
        "append_seconds_mean": statistics.mean(times),
        "append_seconds_median": statistics.median(times),
        "append_seconds_by_type": per_kind,
        "replay_seconds": replay_s,
        "replay_events_per_second": n_events / replay_s,
        "epoch_seconds_default_data": epoch_s,
        "logging_seconds_per_round": round_s,
        "training_seconds_per_round": train_s,
        "logging_overhead_percent": 100 * round_s / train_s,
    }
    lines = [
        "# Ledger overhead (MLflow on local SQLite)",
        "",
        f"Written by `bench/ledger.py{' --quick' if args.quick else ''}` on {platform.machine()}, "
        f"{os.cpu_count()} cores. One search of {n_events} events (proposed / started / completed with a "
        f"{weights.stat().st_size // 1024} KiB weights file, repeated), appended one at a time, then replayed by a fresh reader.",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| append one event, mean | {figures['append_seconds_mean'] * 1000:.0f} ms |",
        f"| append one event, median | {figures['append_seconds_median'] * 1000:.0f} ms |",
    ]
    lines += [f"| append {k} | {v * 1000:.0f} ms |" for k, v in sorted(per_kind.items())]
    lines += [
        f"| replay {n_events} events (fresh reader, chain verified) | {replay_s:.1f} s ({figures['replay_events_per_second']:.0f} events/s) |",
        f"| one training epoch, initial CNN width {config['search']['initial_width']} on mnist5k (3,000 images) | {epoch_s:.1f} s |",
        f"| logging per round (3 events) / training per round ({config['train']['epochs']} epochs) | {round_s:.2f} s / {train_s:.1f} s = **{figures['logging_overhead_percent']:.1f}%** |",
        "",
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ledger.md").write_text("\n".join(lines))
    (RESULTS / "ledger.json").write_text(json.dumps(figures, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
