"""The ``nas`` command line: what MLflow, Prefect and DVC do not do themselves (search, resume, replay, audit,
list, report, register, and the DVC stages).

Exit status: 0 done; 1 an audit or verified replay that failed; 2 bad input (one sentence on stderr); 3 a log
that fails its integrity checks; 4 a store that cannot be read or reached; 130 stopped by Ctrl-C or SIGTERM
(continue with nas resume).

Heavy libraries are imported inside the commands, so ``nas --help`` is fast.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nas import __version__

EXIT_BAD_INPUT = 2
EXIT_INTEGRITY = 3
EXIT_STORE = 4  # the store cannot be read or reached: a corrupt database, a server down or refusing
EXIT_STOPPED = 130  # Ctrl-C or SIGTERM: stopped where nothing is lost (a shell's 128 + SIGINT)
EXIT_BROKEN_PIPE = 141  # the output's reader went away (a shell's 128 + SIGPIPE)


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


def _progress(line: str) -> None:
    print(line, flush=True)


def _epoch(epoch: int, logs: dict[str, float]) -> None:
    acc = logs.get("val_accuracy", float("nan"))
    print(f"    epoch {epoch + 1}: loss {logs.get('loss', float('nan')):.4f}  val_accuracy {acc:.4f}", flush=True)


def _store(create: bool = False) -> Any:
    """The store of ``MLFLOW_TRACKING_URI`` (default ./mlflow.db); unless ``create``, ValueError where there is
    none yet, so that a command that only reads does not make one."""
    from nas.tracking import open_store, tracking_uri
    from nas.tracking.problems import require_store

    if not create:
        require_store(tracking_uri())
    return open_store()


def _head_line(store: Any, name: str, by: str) -> None:
    """Print the search's head and append it to the witness file."""
    from nas.drivers.witness import witness

    head = store.log(name).head()
    path = witness(name, head, store.uri, by)
    kept = f" (kept in {path})" if path else ""
    print(f"head of {name}: {head}{kept}; check it later with nas audit {name} --anchor {head}")


def _run(name: str, config: Mapping[str, Any] | None, local: bool) -> int:
    """Run or resume search ``name``: the nas-search Prefect flow in this process (on ``PREFECT_API_URL``, else on
    a Prefect API of this process's own), or the plain loop. Ctrl-C or SIGTERM stops it at the next batch:
    StopRequested."""
    from nas.drivers.runner import run_search
    from nas.drivers.signals import stop_on_signals
    from nas.ledger.replay import summary
    from nas.ledger.service import SearchService
    from nas.training.stop import StopRequested

    store = _store(create=config is not None)
    with stop_on_signals(), _naming(name), _new_search(name if config is not None else None):
        if local:
            state = run_search(store, name, config, progress=_progress, on_epoch=_epoch)
        else:
            os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry: no internet here
            from flows.local_api import local_api
            from flows.nas_search import nas_search

            with local_api():
                final = nas_search(name=name, settings=dict(config) if config is not None else None, return_state=True)
            if final.is_cancelled():
                raise StopRequested(final.message or "cancelled")
            final.result()  # the flow's error, if it failed
            state = SearchService(store.log(name)).state
    info = summary(state)
    counts = f"{info['failed']} failed" + (
        f", {info['not_trained']} not trained for lack of time" if info["not_trained"] else ""
    )
    if info["best_model"]:
        print(
            f"search {name}: best model {info['best_model']} (architecture {info['best_architecture'][:12]}) "
            f"val_accuracy {info['best_val_accuracy']:.4f}; {info['trained']} trained, {counts}"
        )
    else:
        print(f"search {name}: no model trained ({counts})")
    _head_line(store, name, "nas search" if config is not None else "nas resume")
    print(f"browse it: {store.reports(name).location()}")
    return 0


@contextmanager
def _naming(name: str) -> Iterator[None]:
    """A StopRequested out of the block carries the search's name (``search``), for the line that says how to go on."""
    from nas.training.stop import StopRequested

    try:
        yield
    except StopRequested as e:
        e.search = name  # type: ignore[attr-defined]
        raise


@contextmanager
def _new_search(name: str | None) -> Iterator[None]:
    """For a new search ``name``: another process that took its lease (two ``nas search --name NAME`` at once,
    both finding no such search) is told as the search existing already."""
    from nas.ledger.ports import LeaseHeld

    try:
        yield
    except LeaseHeld as e:
        if name is None:
            raise
        raise ValueError(
            f"search {name!r} already exists: another process started it and runs it now; "
            f"continue it with: nas resume {name} after that one stops"
        ) from e


def default_name(config: Mapping[str, Any]) -> str:
    """``<strategy>-<dataset>-<time>``, the dataset named by its file or folder name (paths cannot name a search)."""
    dataset = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(str(config["data"]["dataset"]).rstrip("/")).stem).strip("-.")
    return f"{config['search']['strategy']}-{dataset or 'data'}-{time.strftime('%Y%m%d-%H%M%S')}"


def _search(args: argparse.Namespace) -> int:
    """Run a new search on the local MLflow store (or MLFLOW_TRACKING_URI)."""
    from nas.drivers.config import load, located
    from nas.drivers.runner import check_new
    from nas.ledger.ports import check_search_name

    config = located(load(Path(args.config) if args.config else None, args.set))
    name = check_search_name(default_name(config) if args.name is None else args.name)
    check_new(config)  # bad data or an initial network over the cap: refused before the store is touched
    if _store(create=True).exists(name):
        raise ValueError(f"search {name!r} already exists; continue it with: nas resume {name}")
    return _run(name, config, args.local)


def _resume(args: argparse.Namespace) -> int:
    """Continue a search that stopped for any reason (the same code path as starting it)."""
    if not _store().exists(args.name):
        raise ValueError(f"there is no search {args.name!r} to resume; start it with nas search")
    _check_anchors(args.name)
    return _run(args.name, None, args.local)


def _check_anchors(name: str) -> None:
    """ChainError if the log no longer holds a head the default witness file kept (checked before resuming)."""
    from nas.drivers.witness import default_anchors
    from nas.ledger.audit import AuditReport, anchor_findings, require_clean

    store = _store()
    anchors = default_anchors(name, store.uri)
    if anchors:
        records = store.log(name).records()
        report = AuditReport(name)
        for seq, problem in anchor_findings([r["hash"] for r in records], anchors):
            report.add(seq, problem)
        require_clean(report)


def _replay(args: argparse.Namespace) -> int:
    """Rebuild a search's state from its events alone."""
    from nas.ledger.audit import require_files
    from nas.ledger.replay import summary, verify
    from nas.ledger.state import fold

    store = _store()
    events = store.log(args.name).read()
    if not events:
        raise ValueError(f"no search named {args.name!r} in {store.uri}; nas ls lists the searches")
    info = summary(fold(events))
    if args.verify:
        require_files(store, args.name)  # a verified log is one a resume could build on
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
    """Check a search's log and everything the store shows of it; show the best model's lineage."""
    from nas.drivers.witness import default_anchors, parse_anchor, witness, witness_path

    store = _store()
    if not store.exists(args.name):
        raise ValueError(f"there is no search {args.name!r} in {store.uri}; nas ls lists the searches")
    anchors = default_anchors(args.name, store.uri)
    sources = [str(witness_path())] if anchors else []
    for value in args.anchor:
        anchors += parse_anchor(value, args.name, store.uri)
        sources.append(value)
    report = store.audit(args.name, deep=not args.quick, anchors=anchors)
    if args.json:
        _print_json(report.to_dict())
    elif report.ok:
        checked = f", {report.anchors_checked} anchor(s) held ({', '.join(sources)})" if report.anchors_checked else ""
        print(f"audit passed: search {report.search}, {report.events} events, chain intact, no extra runs{checked}")
        print(f"head: {report.head}")
        for i, step in enumerate(report.lineage):
            how = ", ".join(step["morphisms"]) or ("trained further" if i else "initial network")
            how += f" at learning rate {step['learning_rate']:g}" if step.get("learning_rate") else ""
            print(f"  {step['model']:>5}  val_accuracy {step['val_accuracy']:.4f}  {step['params']:>10,} params  {how}")
    else:
        seq, problem = report.findings[0]
        where = f"first bad event seq {seq}" if seq else "in its runs (no event is wrong)"
        print(f"audit FAILED: search {report.search}, {where}: {problem}")
        for seq, problem in report.findings[1:]:
            print(f"  also {f'seq {seq}' if seq else 'its runs'}: {problem}")
    if report.ok:
        witness(args.name, report.head, store.uri, "nas audit")
    return 0 if report.ok else 1


def _ls(args: argparse.Namespace) -> int:
    """The searches in the store, with status, models trained and best accuracy (their events are not read)."""
    from dataclasses import asdict

    from nas.tracking import list_searches, tracking_uri

    rows = list_searches()  # reads, and creates no store where there is none
    if args.json:
        _print_json([asdict(r) for r in rows])
        return 0
    if not rows:
        print(f"no searches in {tracking_uri()}")
    for r in rows:
        if r.problem:
            print(f"{r.name:<40} BROKEN     {r.problem}")
            continue
        acc = f"{r.best_val_accuracy:.4f}" if r.best_val_accuracy is not None else "-"
        counts = f"trained {r.trained:>3}  failed {r.failed:>2}  best {acc}"
        lacked = f"  ({r.not_trained} not trained for lack of time)" if r.not_trained else ""
        print(f"{r.name:<40} {r.status:<10} {r.strategy:<9} {counts}{lacked}")
    return 0


def _report(args: argparse.Namespace) -> int:
    """Write a search's HTML report and PNGs (partial while it runs)."""
    from nas.ledger.state import fold
    from nas.report.page import random_baselines, render

    store = _store()
    events = store.log(args.name).read()
    if not events:
        raise ValueError(f"there is no search {args.name!r} in {store.uri}; see nas ls")
    state = fold(events)
    path = render(events, Path(args.out or Path("reports") / args.name), random_baselines(store, state))
    if not state.finished:
        print(f"search {args.name} has not finished: this report is partial ({len(state.models)} models so far)")
    print(f"report: {path} (and {', '.join(p.name for p in sorted(path.parent.glob('*.png')))})")
    return 0


def _register(args: argparse.Namespace) -> int:
    """Register a search's best model, or the mean of its best few, in the MLflow Model Registry (idempotent)."""
    from nas.drivers.pipeline import described_members, register_best

    version, created, name, ids = register_best(_store(), args.name, args.model_name, args.alias, args.ensemble)
    what = "registered as" if created else "already registered as"
    alias = f", alias {args.alias}" if args.alias else ""
    print(f"{described_members(ids)} of search {args.name} is {what} {name} version {version}{alias}")
    print(f'load it: mlflow.pyfunc.load_model("models:/{name}{"@" + args.alias if args.alias else "/" + version}")')
    return 0


def _stage(args: argparse.Namespace) -> int:
    """One stage of the DVC pipeline (dvc.yaml), settings from --params."""
    from nas.drivers import pipeline

    params = Path(args.params)
    if args.stage == "search":
        pipeline.stage_search(params, lambda name, config: _run(name, config, args.local))
    else:
        {"prepare": pipeline.stage_prepare, "evaluate": pipeline.stage_evaluate, "register": pipeline.stage_register}[
            args.stage
        ](params)
    return 0


def _demo(args: argparse.Namespace) -> int:
    """Train the initial network, morph it with a random exact chain and show the function is kept."""
    from nas.drivers.demo import demo

    demo(args)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nas",
        description=__doc__.split("\n\n")[0].replace("``", "").replace("\n", " "),
        epilog=__doc__.split("\n\n")[1].replace("``", "").replace("\n", " "),
    )
    parser.add_argument("--version", action="version", version=f"nas {__version__}")
    parser.add_argument(
        "--verbose", action="store_true", help="show the Keras backend's start-up lines and warnings (hidden otherwise)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    search = sub.add_parser(
        "search", help="run a new search (the nas-search flow; local MLflow unless MLFLOW_TRACKING_URI)"
    )
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
    audit = sub.add_parser("audit", help="verify a search's log and runs, anchors included; show the best lineage")
    audit.add_argument("name")
    audit.add_argument("--anchor", action="append", default=[], metavar="SEQ:HASH|FILE",
                       help="a head printed earlier, a witness file or metrics/search.json (repeatable)")  # fmt: skip
    audit.add_argument("--quick", action="store_true", help="skip stored files and metric histories")
    audit.add_argument("--json", action="store_true")
    audit.set_defaults(run=_audit)
    ls = sub.add_parser("ls", help="list searches with status, models trained and best accuracy")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(run=_ls)
    report = sub.add_parser("report", help="write a search's HTML report and PNGs (partial while it runs)")
    report.add_argument("name")
    report.add_argument("--out", help="folder for report.html and the PNGs (default: reports/NAME)")
    report.set_defaults(run=_report)
    register = sub.add_parser("register", help="register a search's best model in the MLflow Model Registry")
    register.add_argument("name")
    register.add_argument("--model-name", help="registered model name (default: the search's name)")
    register.add_argument("--alias", default="champion", help="alias to point at the version ('' for none)")
    register.add_argument(
        "--ensemble",
        type=int,
        default=1,
        metavar="K",
        help="register the mean of the K best models' class probabilities (default 1: the best model alone)",
    )
    register.set_defaults(run=_register)
    stage = sub.add_parser("stage", help="run one stage of the DVC pipeline (see dvc.yaml; dvc repro runs them all)")
    stage.add_argument("stage", choices=["prepare", "search", "evaluate", "register"])
    stage.add_argument("--params", default="params.yaml", help="settings file (default: params.yaml)")
    stage.add_argument("--local", action="store_true", help="search: run the plain loop instead of the Prefect flow")
    stage.set_defaults(run=_stage)
    demo = sub.add_parser("demo", help="train the initial network, morph it, check the function is kept")
    demo.add_argument("--dataset", default="mnist5k", help="built-in dataset: mnist5k or digits")
    demo.add_argument("--epochs", type=int, default=2)
    demo.add_argument("--depth", type=int, default=3, help="conv blocks of the initial network")
    demo.add_argument("--width", type=int, default=32, help="filters of the initial network")
    demo.add_argument("--morphisms", type=int, default=4, help="length of the random morphism chain")
    demo.add_argument("--max-params", type=int, default=2_000_000)
    demo.add_argument("--max-layers", type=int, default=60)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nas`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.verbose:
        os.environ["NAS_VERBOSE"] = "1"  # read where Keras is imported (nas.training.backend), and by subprocesses
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter is not for users
    from nas.ledger.log import ChainError
    from nas.ledger.ports import LeaseHeld
    from nas.training.stop import StopRequested

    try:
        return int(args.run(args))
    except StopRequested as e:
        name = getattr(e, "search", None)
        print(f"nas: stopped; continue it with: nas resume {name}" if name else "nas: stopped", file=sys.stderr)
        return EXIT_STOPPED
    except ChainError as e:
        print(f"nas: integrity error: {e}", file=sys.stderr)
        return EXIT_INTEGRITY
    except (ValueError, LeaseHeld) as e:
        print(f"nas: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # the reader went away (nas audit NAME | head -1): no more to say, nowhere to say it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as e:
        from nas.tracking import tracking_uri
        from nas.tracking.problems import store_problem

        problem = store_problem(e, tracking_uri())
        if problem is None:
            raise  # a bug: its traceback is for us
        print(f"nas: store error: {problem}", file=sys.stderr)
        return EXIT_STORE


if __name__ == "__main__":
    sys.exit(main())
