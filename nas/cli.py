"""The ``nas`` command line. Heavy libraries are imported inside the commands so ``nas --help`` is fast."""

from __future__ import annotations

import argparse
import sys


def _demo(args: argparse.Namespace) -> int:
    """Train the initial network, morph it with a random exact chain and show the function is kept."""
    import numpy as np

    from nas.data import load_splits
    from nas.graph import Architecture
    from nas.initial import initial_architecture
    from nas.keras_builder import preservation_error
    from nas.keras_train import TrainConfig, make_deterministic, train
    from nas.morphisms import random_morphism
    from nas.weights import Weights

    make_deterministic(args.seed)
    data = load_splits(args.dataset, seed=args.seed)
    arch = initial_architecture(data.input_shape, data.num_classes, depth=args.depth, width=args.width)
    print(f"dataset {data.name}: {len(data.x_train)} train, {len(data.x_val)} val, {data.num_classes} classes")
    print(f"initial architecture {arch.id[:12]}: {arch.n_layers} layers, {arch.param_count:,} parameters")

    def show(epoch: int, logs: dict[str, float]) -> None:
        print(f"  epoch {epoch + 1}: loss {logs['loss']:.4f}  val_accuracy {logs['val_accuracy']:.4f}", flush=True)

    config = TrainConfig(epochs=args.epochs, batch_size=64)
    parent = train(arch, None, data.x_train, data.y_train, data.x_val, data.y_val, config, on_epoch=show)
    print(f"parent val_accuracy {parent.val_accuracy:.4f} ({parent.seconds:.1f} s)")

    rng = np.random.default_rng(args.seed)
    probe = data.x_val[:256]
    child: Architecture = arch
    weights: Weights = parent.weights
    for step in range(args.morphisms):
        found = random_morphism(child, rng, max_params=args.max_params, max_layers=args.max_layers)
        if found is None:
            print("no morphism fits within the size caps; stopping the chain")
            break
        m, _ = found
        new_arch, new_weights = m.apply(child, weights)
        err = preservation_error(child, weights, new_arch, new_weights, probe)
        print(f"morphism {step + 1}: {m.describe():32s} {new_arch.param_count:>9,} params  max|diff| {err:.2e}")
        child, weights = new_arch, new_weights
    result = train(child, weights, data.x_train, data.y_train, data.x_val, data.y_val, config, on_epoch=show)
    print(f"child {child.id[:12]} val_accuracy {result.val_accuracy:.4f} after {len(result.history)} epochs")
    print("This is the core alone (graph, builder, morphisms); the search itself is not built yet.")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nas`` console script; returns the exit status."""
    parser = argparse.ArgumentParser(prog="nas", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train the initial network, morph it, check the function is kept")
    demo.add_argument("--dataset", default="mnist5k", help="built-in dataset: mnist5k or digits")
    demo.add_argument("--epochs", type=int, default=2)
    demo.add_argument("--depth", type=int, default=3, help="conv blocks (or dense layers) of the initial network")
    demo.add_argument("--width", type=int, default=32, help="filters (or units) of the initial network")
    demo.add_argument("--morphisms", type=int, default=4, help="length of the random morphism chain")
    demo.add_argument("--max-params", type=int, default=2_000_000)
    demo.add_argument("--max-layers", type=int, default=60)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except ValueError as e:
        print(f"nas: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
