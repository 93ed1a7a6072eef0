"""``nas demo``: the core alone. Train the initial network, morph it with a random chain of exact
morphisms and print each step's preservation error, then train the child."""

from __future__ import annotations

import argparse


def demo(args: argparse.Namespace) -> None:
    """Train the initial network, morph it with a random exact chain and show the function is kept."""
    import numpy as np

    from nas.architectures.graph import Architecture
    from nas.architectures.initial import initial_architecture
    from nas.architectures.morphisms import random_morphism
    from nas.architectures.weights import Weights
    from nas.data import load_splits
    from nas.training.builder import preservation_error
    from nas.training.fit import TrainConfig, fit, make_deterministic

    make_deterministic(args.seed)
    data = load_splits(args.dataset, seed=args.seed)
    arch = initial_architecture(data.input_shape, data.num_classes, depth=args.depth, width=args.width)
    print(f"dataset {data.name}: {len(data.x_train)} train, {len(data.x_val)} val, {data.num_classes} classes")
    print(f"initial architecture {arch.id[:12]}: {arch.n_layers} layers, {arch.param_count:,} parameters")

    def show(epoch: int, logs: dict[str, float]) -> None:
        print(f"  epoch {epoch + 1}: loss {logs['loss']:.4f}  val_accuracy {logs['val_accuracy']:.4f}", flush=True)

    config = TrainConfig(epochs=args.epochs, batch_size=64)
    parent = fit(arch, None, data.x_train, data.y_train, data.x_val, data.y_val, config, on_epoch=show)
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
    result = fit(child, weights, data.x_train, data.y_train, data.x_val, data.y_val, config, on_epoch=show)
    print(f"child {child.id[:12]} val_accuracy {result.val_accuracy:.4f} after {len(result.history)} epochs")
    print("This was the core alone (graph, builder, morphisms): `nas search` runs the search itself.")
