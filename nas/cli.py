"""The ``nas`` command line. Heavy libraries are imported inside the commands so ``nas --help`` is fast."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


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


def _print_json(value: object) -> None:
    import json

    print(json.dumps(value, indent=2, sort_keys=True, default=str))


def _progress(line: str) -> None:
    print(line, flush=True)


def _epoch(epoch: int, logs: dict[str, float]) -> None:
    acc = logs.get("val_accuracy", float("nan"))
    print(f"    epoch {epoch + 1}: loss {logs.get('loss', float('nan')):.4f}  val_accuracy {acc:.4f}", flush=True)


def _finish_line(state: object, uri: str) -> None:
    from nas.replay import summary

    info = summary(state, state.last_seq)  # type: ignore[arg-type, attr-defined]
    if info["best_model"]:
        print(
            f"search {info['search']}: best model {info['best_model']} "
            f"(architecture {info['best_architecture'][:12]}) val_accuracy {info['best_val_accuracy']:.4f}; "
            f"{info['trained']} trained, {info['failed']} failed"
        )
    else:
        print(f"search {info['search']}: no model trained ({info['failed']} failed)")
    print(f"browse it: mlflow ui --backend-store-uri {uri}")


def _run(name: str, config: dict | None, local: bool) -> int:
    """Run or resume search ``name``: the nas-search Prefect flow in this process, or the plain loop."""
    from nas.event_log.mlflow import MlflowEventLog
    from nas.runner import run_search
    from nas.search import SearchService

    log = MlflowEventLog(name)
    if local:
        state = run_search(log, config, progress=_progress, on_epoch=_epoch)
    else:
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry: no internet here
        from flows.nas_search import nas_search

        overrides = [f"{g}.{k}={v}" for g, keys in (config or {}).items() for k, v in keys.items()]
        nas_search(name=name, overrides=overrides or None)
        state = SearchService(log).state
    _finish_line(state, log.uri)
    return 0


def _search(args: argparse.Namespace) -> int:
    """Run a new search on the local MLflow store (or MLFLOW_TRACKING_URI)."""
    import time
    from pathlib import Path

    from nas.config import load
    from nas.event_log.mlflow import MlflowEventLog
    from nas.runner import splits_for

    config = load(Path(args.config) if args.config else None, args.set)
    splits_for(config)  # bad data is refused before anything is logged
    name = args.name or f"{config['search']['strategy']}-{config['data']['dataset']}-{time.strftime('%Y%m%d-%H%M%S')}"
    if MlflowEventLog(name).claims():
        raise ValueError(f"search {name!r} already exists; continue it with: nas resume {name}")
    return _run(name, config, args.local)


def _resume(args: argparse.Namespace) -> int:
    """Continue a search that stopped for any reason (the same code path as starting it)."""
    from nas.event_log.mlflow import MlflowEventLog

    if not MlflowEventLog(args.name).claims():
        raise ValueError(f"there is no search {args.name!r} to resume; start it with nas search")
    return _run(args.name, None, args.local)


def _replay(args: argparse.Namespace) -> int:
    """Rebuild a search's state from its events alone."""
    from nas.event_log.mlflow import MlflowEventLog
    from nas.replay import summary, verify
    from nas.state import fold

    log = MlflowEventLog(args.name)
    events = log.read()
    if not events:
        raise ValueError(f"no search named {args.name!r} in {log.uri}; nas ls lists the searches")
    info = summary(fold(events), len(events))
    if args.verify:
        divergence = verify(events)
        info["verified"] = divergence is None
        if divergence is not None:
            info["first_divergence"] = {"seq": divergence.seq, "problem": divergence.problem}
    if args.json:
        _print_json(info)
    else:
        for key, value in info.items():
            print(f"{key:>18}: {value}")
    return 1 if info.get("verified") is False else 0


def _audit(args: argparse.Namespace) -> int:
    """Check a search's MLflow runs against its hash chain; show the best model's lineage."""
    from nas.audit import audit
    from nas.event_log.mlflow import MlflowEventLog

    report = audit(MlflowEventLog(args.name))
    if args.json:
        _print_json(report.to_dict())
    elif report.ok:
        print(f"audit passed: search {report.search}, {report.events} events, chain intact, no extra runs")
        for step in report.lineage:
            how = ", ".join(step["morphisms"]) or "initial network"
            print(f"  {step['model']:>5}  val_accuracy {step['val_accuracy']:.4f}  {step['params']:>10,} params  {how}")
    else:
        seq, problem = report.findings[0]
        print(f"audit FAILED: search {report.search}, first bad event seq {seq}: {problem}")
        for seq, problem in report.findings[1:]:
            print(f"  also seq {seq}: {problem}")
    return 0 if report.ok else 1


def _ls(args: argparse.Namespace) -> int:
    """The searches in the store, with status, models trained and best accuracy."""
    from mlflow.tracking import MlflowClient

    from nas.event_log.mlflow import DEFAULT_EXPERIMENT, MlflowEventLog, tracking_uri
    from nas.replay import summary
    from nas.state import fold

    client = MlflowClient(tracking_uri=tracking_uri())
    exp = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], "tags.`nas.role` = 'search'") if exp else []
    rows = []
    for run in runs:
        name = run.data.tags["nas.search_id"]
        events = MlflowEventLog(name).read()
        rows.append(summary(fold(events), len(events)))
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print(f"no searches in {tracking_uri()}")
    for r in rows:
        acc = f"{r['best_val_accuracy']:.4f}" if r["best_val_accuracy"] is not None else "-"
        print(
            f"{r['search']:<40} {r['status']:<10} {r['strategy']:<9} "
            f"trained {r['trained']:>3}  failed {r['failed']:>2}  best {acc}"
        )
    return 0


def _stage(args: argparse.Namespace) -> int:
    """One stage of the DVC pipeline (dvc.yaml), on the paths of nas.pipeline, settings from --params."""
    from nas import pipeline
    from nas.config import load, load_pipeline

    params = Path(args.params)
    if args.stage == "prepare":
        from nas.runner import splits_for

        info = pipeline.prepare(splits_for(load(params)))
        print(
            f"prepared {info['dataset']}: {info['train_examples']} train, {info['val_examples']} validation, "
            f"{info['test_examples']} test examples in {pipeline.PREPARED} "
            f"(fingerprint {str(info['fingerprint'])[:12]})"
        )
        return 0
    if args.stage == "search":
        return _stage_search(params, args.local)
    if args.stage == "evaluate":
        config = load(params)
        result = pipeline.evaluate(
            load_pipeline(params)["final"], config["train"]["batch_size"], config["search"]["seed"]
        )
        print(
            f"test accuracy {result['test_accuracy']:.4f} after {result['final_epochs']} final epoch(s) on train + "
            f"validation (searched model: {result['searched_model_test_accuracy']:.4f}) -> metrics/test.json"
        )
        return 0
    return _stage_register(params)


def _stage_search(params: Path, local: bool) -> int:
    """Run (or resume, or reuse) the search named by the settings and the prepared data; write its outputs."""
    from nas import pipeline
    from nas.config import load
    from nas.data import fingerprint
    from nas.event_log.mlflow import MlflowEventLog
    from nas.registry import link_data
    from nas.search import SearchService
    from nas.weights import load_weights

    splits = pipeline.prepared_data()
    config = load(params, [f"data.dataset={pipeline.PREPARED.as_posix()}"])
    name = pipeline.search_name(config, fingerprint(splits))
    log = MlflowEventLog(name)
    state = SearchService(log).state if log.claims() else None
    if state is not None and state.finished:
        print(f"search {name} already ran on these settings and data; using its results (nas replay {name})")
    else:
        print(f"{'resuming' if state else 'starting'} search {name}")
        _run(name, None if state else config, local)
    link_data(log, splits, pipeline.PREPARED)
    service = SearchService(log)
    events = log.read()
    info = pipeline.write_search_outputs(
        service.state, events, lambda model_id: load_weights(service.weights_file(model_id))
    )
    print(
        f"search {name}: best val_accuracy {info['best_val_accuracy']:.4f}, {info['models_trained']} trained, "
        f"{info['models_failed']} failed -> models/best.keras, metrics/search.json"
    )
    return 0


def _stage_register(params: Path) -> int:
    """Register models/final.keras in the MLflow Model Registry under register.model_name, alias champion."""
    import json

    from nas import pipeline
    from nas.config import load_pipeline
    from nas.event_log.mlflow import MlflowEventLog
    from nas.keras_builder import build_model, load_keras
    from nas.registry import ALIAS, register_final

    name = load_pipeline(params)["register"]["model_name"]
    info, arch = pipeline.read_best()
    weights = load_keras(pipeline.MODELS / "final.keras", arch)
    splits = pipeline.prepared_data()
    test = json.loads((pipeline.METRICS / "test.json").read_text())
    log = MlflowEventLog(info["search"])
    version, created = register_final(
        log,
        info["model_id"],
        build_model(arch, weights),
        weights,
        splits.x_test[:5],
        name,
        description=f"{info['model_id']} of search {info['search']}; test accuracy {test['test_accuracy']:.4f}",
    )
    record = {
        "name": name,
        "version": version,
        "alias": ALIAS,
        "uri": f"models:/{name}@{ALIAS}",
        "search": info["search"],
        "model_id": info["model_id"],
        "test_accuracy": test["test_accuracy"],
    }
    (pipeline.MODELS / "registered.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    what = "registered as" if created else "already registered as"
    print(f"{info['model_id']} of search {info['search']} {what} {name} version {version}, alias {ALIAS}")
    print(f'load it: mlflow.pyfunc.load_model("models:/{name}@{ALIAS}")')
    return 0


def _report(args: argparse.Namespace) -> int:
    """Write a search's HTML report and PNGs (partial while it runs)."""
    from nas.event_log.mlflow import MlflowEventLog
    from nas.report import random_baselines, render
    from nas.state import fold

    log = MlflowEventLog(args.name)
    if not log.claims():
        raise ValueError(f"there is no search {args.name!r} in {log.uri}; see nas ls")
    events = log.read()
    state = fold(events)
    path = render(events, Path(args.out or Path("reports") / args.name), random_baselines(log, state))
    if not state.finished:
        print(f"search {args.name} has not finished: this report is partial ({len(state.models)} models so far)")
    print(f"report: {path} (and {', '.join(p.name for p in sorted(path.parent.glob('*.png')))})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nas`` console script; returns the exit status."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter is not for users
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

    search = sub.add_parser("search", help="run a new search in this process (local MLflow unless MLFLOW_TRACKING_URI)")
    search.add_argument("--config", help="settings file (default: params.yaml)")
    search.add_argument("--set", action="append", default=[], metavar="GROUP.KEY=VALUE", help="override a setting")
    search.add_argument("--name", help="search name (default: <strategy>-<dataset>-<time>)")
    search.add_argument("--local", action="store_true", help="run the plain loop instead of the Prefect flow")
    search.set_defaults(run=_search)
    resume = sub.add_parser("resume", help="continue a search that stopped for any reason")
    resume.add_argument("name")
    resume.add_argument("--local", action="store_true", help="run the plain loop instead of the Prefect flow")
    resume.set_defaults(run=_resume)
    replay = sub.add_parser("replay", help="rebuild a search's state from its events")
    replay.add_argument("name")
    replay.add_argument("--json", action="store_true")
    replay.add_argument("--verify", action="store_true", help="re-run the proposer and check every logged step")
    replay.set_defaults(run=_replay)
    audit = sub.add_parser("audit", help="verify a search's MLflow runs and show the best model's lineage")
    audit.add_argument("name")
    audit.add_argument("--json", action="store_true")
    audit.set_defaults(run=_audit)
    ls = sub.add_parser("ls", help="list searches with status, models trained and best accuracy")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(run=_ls)
    report = sub.add_parser("report", help="write a search's HTML report and PNGs (partial while it runs)")
    report.add_argument("name")
    report.add_argument("--out", help="folder for report.html and the PNGs (default: reports/NAME)")
    report.set_defaults(run=_report)
    stage = sub.add_parser("stage", help="run one stage of the DVC pipeline (see dvc.yaml; dvc repro runs them all)")
    stage.add_argument("stage", choices=["prepare", "search", "evaluate", "register"])
    stage.add_argument("--params", default="params.yaml", help="settings file (default: params.yaml)")
    stage.add_argument("--local", action="store_true", help="search: run the plain loop instead of the Prefect flow")
    stage.set_defaults(run=_stage)
    args = parser.parse_args(argv)
    from nas.event_log.mlflow import LeaseHeld

    try:
        return int(args.run(args))
    except (ValueError, LeaseHeld) as e:
        print(f"nas: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
