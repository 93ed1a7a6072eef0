"""Training speed: a model trained as a search trains it against a bare ``keras.Model.fit`` of the same network.

For three networks (the default initial CNN for 28x28x1 images, a child of it three morphisms away, and the
initial MLP for a table of 54 features), each measured in pairs run back to back, the order alternating:

- search training: ``nas.training.fit.fit`` as a search calls it (its weights given, our batch order, early
  stopping, the per-epoch hook, a deadline, a timeout, the stop request watched);
- bare fit: the same Keras model built from the same weights, compiled alike, ``model.fit`` on the numpy arrays
  with the same batch size, epochs and validation data, its weights read back.

Each side is timed from building the model to having its trained weights. The figure is the median over pairs of
(search seconds / bare seconds); the target is <= 1.05. Imports only the training and architecture code and
Keras (no MLflow, no Prefect), so it runs on a machine with neither; the backend is Keras' (``KERAS_BACKEND``).
The data are random numbers of the datasets' shapes: the figure is about the loop, not about what is learned.

    .venv/bin/python bench/train_speed.py                   # 5 pairs per network, ~4 minutes on 2 cores
    KERAS_BACKEND=jax .venv/bin/python bench/train_speed.py --pairs 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"


def networks() -> dict[str, tuple[Any, int, int]]:
    """name -> (architecture, training examples, classes)."""
    from nas.architectures.initial import initial_architecture
    from nas.architectures.morphisms import random_morphism

    cnn = initial_architecture((28, 28, 1), 10, depth=3, width=32)
    child, rng = cnn, np.random.default_rng(0)
    for _ in range(3):
        found = random_morphism(child, rng, max_params=1_000_000)
        assert found is not None
        child = found[1]
    mlp = initial_architecture((54,), 7, dense_layers=2, units=256)
    return {"cnn": (cnn, 4000, 10), "morphed cnn": (child, 4000, 10), "table mlp": (mlp, 20000, 7)}


def data(arch: Any, examples: int, classes: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(1)
    shape = tuple(arch.input_shape)
    x = rng.random((examples, *shape), dtype=np.float32)
    xv = rng.random((examples // 8, *shape), dtype=np.float32)
    return x, rng.integers(0, classes, examples), xv, rng.integers(0, classes, examples // 8)


def search_training(arch: Any, weights: Any, arrays: tuple[np.ndarray, ...], config: Any) -> float:
    from nas.training.fit import fit

    x, y, xv, yv = arrays
    start = time.perf_counter()
    fit(arch, weights, x, y, xv, yv, config, seed=1, on_epoch=lambda e, logs: False,
        deadline=time.time() + 3600, timeout_s=3600.0)  # fmt: skip
    return time.perf_counter() - start


def bare_fit(arch: Any, weights: Any, arrays: tuple[np.ndarray, ...], config: Any) -> float:
    import keras

    from nas.training.builder import build_model

    x, y, xv, yv = arrays
    start = time.perf_counter()
    model = build_model(arch, weights, seed=1)
    model.compile(
        keras.optimizers.Adam(config.learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    model.fit(x, y, batch_size=config.batch_size, epochs=config.epochs, validation_data=(xv, yv), verbose=0)
    model.get_weights()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", default=str(RESULTS / "train_speed.json"))
    parser.add_argument("--note", default="", help="what the page should say of this run (e.g. what else ran)")
    args = parser.parse_args()

    import keras

    from nas.architectures.weights import init_weights
    from nas.training.fit import TrainConfig, make_deterministic

    backend = keras.backend.backend()
    # Patience as long as the training: early stopping watches, as in a search, and never cuts the epochs short.
    config = TrainConfig(args.epochs, 64, 1e-3, early_stopping_patience=args.epochs)
    rows = []
    for name, (arch, examples, classes) in networks().items():
        arrays = data(arch, examples, classes)
        weights = init_weights(arch, np.random.default_rng(2))
        make_deterministic(1)
        search_training(arch, weights, arrays, config)  # warm both paths up (imports, first tracing)
        bare_fit(arch, weights, arrays, config)
        pairs = []
        for i in range(args.pairs):
            if i % 2:
                bare = bare_fit(arch, weights, arrays, config)
                ours = search_training(arch, weights, arrays, config)
            else:
                ours = search_training(arch, weights, arrays, config)
                bare = bare_fit(arch, weights, arrays, config)
            pairs.append((ours, bare))
        ratio = statistics.median(o / b for o, b in pairs)
        ours_s, bare_s = statistics.median(o for o, _ in pairs), statistics.median(b for _, b in pairs)
        row = {
            "network": name, "params": arch.param_count, "examples": examples, "epochs": args.epochs,
            "search_s_per_epoch": ours_s / args.epochs, "bare_s_per_epoch": bare_s / args.epochs,
            "search_examples_per_s": examples * args.epochs / ours_s,
            "bare_examples_per_s": examples * args.epochs / bare_s,
            "ratio": ratio, "ratios": [o / b for o, b in pairs],
        }  # fmt: skip
        rows.append(row)
        print(f"{backend:<10} {name:<12} search {row['search_s_per_epoch']:.2f} s/epoch, bare "
              f"{row['bare_s_per_epoch']:.2f} s/epoch: ratio {ratio:.3f} "
              f"({', '.join(f'{r:.2f}' for r in row['ratios'])})", flush=True)  # fmt: skip
    write(Path(args.out), backend, rows, args.note)


def write(path: Path, backend: str, rows: list[dict[str, Any]], note: str = "") -> None:
    """Keep this backend's rows in ``path`` (other backends' rows stay) and rewrite the page beside it."""
    found = json.loads(path.read_text()) if path.exists() else {}
    found[backend] = {
        "date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "device": device(), "rows": rows, "note": note,
    }  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(found, indent=1) + "\n")
    lines = [
        "# Training speed: a search's training against a bare Keras fit",
        "",
        "Written by `bench/train_speed.py`: the same network, weights, data shape, batch size (64) and epochs, "
        "trained by `nas.training.fit.fit` as a search trains it and by a bare `model.fit`, in pairs back to "
        "back; ratio = median over pairs of search seconds / bare seconds (target <= 1.05).",
        "",
        "| backend | device | network | parameters | search s/epoch | bare s/epoch | examples/s (search, bare) "
        "| ratio | pairs |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, run in sorted(found.items()):
        for r in run["rows"]:
            lines.append(
                f"| {name} | {run['device']} | {r['network']} | {r['params']:,} | {r['search_s_per_epoch']:.2f} "
                f"| {r['bare_s_per_epoch']:.2f} | {r['search_examples_per_s']:,.0f}, {r['bare_examples_per_s']:,.0f} "
                f"| **{r['ratio']:.3f}** | {', '.join(f'{x:.2f}' for x in r['ratios'])} |"
            )
    lines += ["", "Runs: " + "; ".join(f"{k} on {v['date']}, {v['machine']}" for k, v in sorted(found.items()))]
    lines += [f"\n{k}: {v['note']}" for k, v in sorted(found.items()) if v.get("note")]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {path} and {path.with_suffix('.md')}")


def device() -> str:
    """The accelerator Keras' backend trains on, or "CPU"."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        found = jax.devices()[0]
        return "CPU" if found.platform == "cpu" else str(getattr(found, "device_kind", found.platform))
    if keras.backend.backend() == "torch":
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return gpus[0].name if gpus else "CPU"


if __name__ == "__main__":
    main()
