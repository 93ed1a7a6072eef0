"""Warm start: does a morphed child reach its parent's accuracy in fewer epochs than training from scratch?

Trains the initial CNN on the bundled MNIST-5k subset, then for several seeds morphs it with a random
chain of exact morphisms and trains the child (a) from the parent's weights and (b) from scratch,
each until it reaches the parent's validation accuracy or runs out of epochs. Prints the table and
writes bench/results/warm_start.{md,json}.

    .venv/bin/python bench/warm_start.py            # 5 seeds, about 5 minutes on 2 cores
    .venv/bin/python bench/warm_start.py --quick    # 2 seeds, smoke check
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from nas.architectures.initial import initial_architecture
from nas.architectures.morphisms import random_morphism
from nas.data import load_splits
from nas.training.builder import predict
from nas.training.fit import TrainConfig, fit, make_deterministic

RESULTS = Path(__file__).parent / "results"


def epochs_to(target: float, history: list[dict[str, float]]) -> int | None:
    """1-based epoch at which validation accuracy first reached ``target``; None if never."""
    return next((i + 1 for i, h in enumerate(history) if h["val_accuracy"] >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--parent-epochs", type=int, default=5)
    parser.add_argument("--max-epochs", type=int, default=10)
    parser.add_argument("--chain", type=int, default=2, help="morphisms per child")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 seeds, 6 epochs at most")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.max_epochs, args.parent_epochs = 2, 6, 3

    make_deterministic(0)
    data = load_splits(args.dataset, seed=0)
    arch = initial_architecture(data.input_shape, data.num_classes, width=args.width)
    fixed = TrainConfig(epochs=args.parent_epochs, early_stopping_patience=0)
    parent = fit(arch, None, data.x_train, data.y_train, data.x_val, data.y_val, fixed)
    target = parent.val_accuracy
    print(
        f"parent {arch.id[:12]}: {arch.param_count:,} params, "
        f"val_accuracy {target:.4f} after {args.parent_epochs} epochs"
    )

    def stop_at_target(_epoch: int, logs: dict[str, float]) -> bool:
        return logs["val_accuracy"] >= target

    config = TrainConfig(epochs=args.max_epochs, early_stopping_patience=0)
    rows = []
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        child, weights = arch, parent.weights
        chain = []
        for _ in range(args.chain):
            found = random_morphism(child, rng, max_params=20 * arch.param_count)
            assert found is not None
            chain.append(found[0].describe())
            child, weights = found[0].apply(child, weights)
        start_acc = float(np.mean(np.argmax(predict(child, weights, data.x_val), 1) == data.y_val))
        make_deterministic(seed)
        t = time.perf_counter()
        morphed = fit(
            child, weights, data.x_train, data.y_train, data.x_val, data.y_val, config, on_epoch=stop_at_target
        )
        morphed_s = time.perf_counter() - t
        make_deterministic(seed)
        t = time.perf_counter()
        scratch = fit(child, None, data.x_train, data.y_train, data.x_val, data.y_val, config, on_epoch=stop_at_target)
        scratch_s = time.perf_counter() - t
        row = {
            "seed": seed,
            "chain": chain,
            "params": child.param_count,
            "morphed_val_acc_before_training": start_acc,
            "morphed_epochs": epochs_to(target, morphed.history),
            "scratch_epochs": epochs_to(target, scratch.history),
            "morphed_seconds": morphed_s,
            "scratch_seconds": scratch_s,
        }
        rows.append(row)
        print(json.dumps(row))

    cap = args.max_epochs + 1  # "not reached" counts as one past the cap in the medians
    m_med = statistics.median(r["morphed_epochs"] or cap for r in rows)
    s_med = statistics.median(r["scratch_epochs"] or cap for r in rows)
    lines = [
        "# Warm start: epochs to reach the parent's validation accuracy",
        "",
        f"Dataset `{args.dataset}` ({len(data.x_train)} train / {len(data.x_val)} val), initial CNN width {args.width} "
        f"({arch.param_count:,} params) trained {args.parent_epochs} epochs: parent val accuracy **{target:.4f}**.",
        f"Each child: {args.chain} random exact morphisms, then Adam (lr 1e-3) until it reaches the parent's accuracy "
        f"or {args.max_epochs} epochs. Machine: {platform.machine()}, {platform.processor() or 'cpu'}; "
        f"written by `bench/warm_start.py{' --quick' if args.quick else ''}`.",
        "",
        "| seed | morphisms | params | morphed acc before training | epochs, morphed | epochs, scratch |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['seed']} | {', '.join(r['chain'])} | {r['params']:,} | {r['morphed_val_acc_before_training']:.4f} "
            f"| {r['morphed_epochs'] or f'>{args.max_epochs}'} | {r['scratch_epochs'] or f'>{args.max_epochs}'} |"
        )
    lines += [
        "",
        f"Median epochs to parent accuracy: morphed **{m_med}**, scratch **{s_med}** "
        f"(scratch / morphed = {s_med / m_med:.1f}x; 'not reached' counted as {cap}).",
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "warm_start.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "warm_start.json").write_text(json.dumps({"target": target, "rows": rows}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
