"""Ledger speed on the MLflow store: appending one event, reading a log cold (new process, no cache) and warm,
auditing it, and listing a store of many searches, as logs grow from 100 to 10,000 events.

    .venv/bin/python bench/ledger.py            # 100, 1,000 and 10,000 events; about 15 minutes
    .venv/bin/python bench/ledger.py --quick    # 100 and 1,000 events
    MLFLOW_TRACKING_URI=postgresql://... .venv/bin/python bench/ledger.py --quick   # another store

Events go through the project's own append path (``store.log(name).append``), one call per event as the
runner makes them: proposed / started / completed, every completion with a weights file (the initial CNN's,
91 KiB), so reading and auditing pay for real artifacts. A cold read runs in a fresh Python process and is
timed inside it (imports are reported apart).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).parents[1]

COLD_READ = """
import json, sys, time
t0 = time.perf_counter()
import mlflow.store.tracking.sqlalchemy_store, nas.tracking.store
t1 = time.perf_counter()
log = nas.tracking.open_store().log(sys.argv[1])
events = log.read()
t2 = time.perf_counter()
print(json.dumps({"imports": t1 - t0, "read": t2 - t1, "events": len(events)}))
"""


def make_events(sid: str, first_seq: int, count: int, arch, epochs, sha: str) -> list:  # type: ignore[no-untyped-def]
    """``count`` events continuing a log at ``first_seq``: the proposed / started / completed cycle."""
    from nas.ledger.events import ArchitectureProposed, TrainingCompleted, TrainingStarted

    out = []
    seq = first_seq
    while len(out) < count:
        model = f"m{(seq - 2) // 3 + 1}"
        kind = (seq - 2) % 3
        if kind == 0:
            event = ArchitectureProposed(
                sid, seq, model, None, [], arch.id, arch.to_json(), "bayesian", 0.9, 0.8, 0.04, 700, 2.0
            )
        elif kind == 1:
            event = TrainingStarted(sid, seq, model)
        else:
            event = TrainingCompleted(sid, seq, model, arch.id, 0.8, arch.param_count, epochs, 0.0, 30.0, sha)
        out.append(event)
        seq += 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="logs of 100 and 1,000 events only")
    parser.add_argument("--sizes", type=int, nargs="+", help="log sizes to measure (overrides --quick)")
    parser.add_argument("--searches", type=int, default=100, help="searches in the store that nas ls lists")
    args = parser.parse_args()
    sizes = args.sizes or ([100, 1000] if args.quick else [100, 1000, 10000])

    from nas.architectures.initial import initial_architecture
    from nas.architectures.weights import init_weights, save_weights
    from nas.drivers.config import load
    from nas.ledger.events import SearchStarted, TrainingCompleted

    tmp = Path(tempfile.mkdtemp(prefix="nas-bench-ledger-"))
    os.chdir(tmp)
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{tmp / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["NAS_WITNESS"] = str(tmp / "witness.jsonl")
    from nas.tracking import open_store

    store = open_store()
    config = load(ROOT / "params.yaml")
    arch = initial_architecture((28, 28, 1), 10, width=config["search"]["initial_width"])
    weights = tmp / "weights.npz"
    save_weights(weights, init_weights(arch, np.random.default_rng(0)))
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    epochs = [{"loss": 1.0, "val_loss": 0.9, "accuracy": 0.7, "val_accuracy": 0.8}] * config["train"]["epochs"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def append(log, events) -> list[tuple[str, float]]:  # type: ignore[no-untyped-def]
        timed = []
        for event in events:
            attach = {event.seq: {"weights.npz": weights}} if isinstance(event, TrainingCompleted) else None
            start = time.perf_counter()
            log.append([event], event.seq - 1, attach)
            timed.append((type(event).__name__, time.perf_counter() - start))
        return timed

    def cold_read(name: str) -> dict[str, float]:
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", COLD_READ, name], env=env, capture_output=True, text=True, check=True
        ).stdout
        figures = json.loads(out.strip().splitlines()[-1])
        figures["process"] = time.perf_counter() - start
        return figures

    def listed_through_mlflow() -> float:
        """`nas ls`'s listing done by MLflow's client in a fresh process (the peer of the direct SQLite read)."""
        start = time.perf_counter()
        code = "from nas.tracking import open_store; print(len(open_store().searches()))"
        subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True)
        return time.perf_counter() - start

    def cli(*command: str) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "nas.cli", *command], env=env, capture_output=True, check=False)
        return time.perf_counter() - start

    # One growing search: append timings along the way, reads and audits at each size.
    sid = "bench"
    store.create(sid)
    log = store.log(sid)
    log.append([SearchStarted(sid, 1, sid, config, "f" * 64, "bench", 0, arch.to_json())], 0)
    appends: list[tuple[str, float]] = []
    rows = []
    for size in sizes:
        appends += append(log, make_events(sid, log.last_seq() + 1, size - log.last_seq(), arch, epochs, sha))
        print(f"{size} events appended", flush=True)
        cold = cold_read(sid)
        assert cold["events"] == size
        reader = open_store().log(sid)
        reader.read()
        (extra,) = make_events(sid, size + 1, 1, arch, epochs, sha)
        append(log, [extra])
        start = time.perf_counter()
        assert len(reader.read()) == size + 1
        warm = time.perf_counter() - start
        rows.append(
            {
                "events": size,
                "cold_read_s": cold["read"],
                "cold_imports_s": cold["imports"],
                "cold_process_s": cold["process"],
                "warm_reread_after_one_event_s": warm,
                "audit_quick_s": cli("audit", sid, "--quick"),
                "audit_deep_s": cli("audit", sid),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
        # The extra event was for the warm read; carry on from it.

    # nas ls over many searches, each a short one (a start and two models).
    for n in range(args.searches):
        name = f"s{n:03d}"
        store.create(name)
        other = store.log(name)
        other.append([SearchStarted(name, 1, name, config, "f" * 64, "bench", n, arch.to_json())], 0)
        append(other, make_events(name, 2, 6, arch, epochs, sha))
        store.reports(name).summary({"events": "7", "status": "running", "models_trained": "2"}, {})
    ls_s = statistics.median(cli("ls") for _ in range(3))
    import_s = statistics.median(cli("--help") for _ in range(3))
    ls_mlflow_s = statistics.median(listed_through_mlflow() for _ in range(3))

    # Peer (SQLite stores): the same appends on a store left in SQLite's default rollback-journal mode.
    peer_times: list[float] = []
    same_times: list[float] = []
    if uri.startswith("sqlite:"):
        import nas.tracking.store as mlflow_store

        mlflow_store.write_ahead_log = lambda path: None  # type: ignore[assignment]
        peer = mlflow_store.MlflowStore(f"sqlite:///{tmp / 'journal.db'}")
        peer.create(sid)
        peer_log = peer.log(sid)
        peer_log.append([SearchStarted(sid, 1, sid, config, "f" * 64, "bench", 0, arch.to_json())], 0)
        peer_times = [t for _, t in append(peer_log, make_events(sid, 2, min(300, sizes[-1]), arch, epochs, sha))]
        more = make_events(sid, log.last_seq() + 1, len(peer_times), arch, epochs, sha)
        same_times = [t for _, t in append(log, more)]

    kinds = sorted({k for k, _ in appends})
    times = [t for _, t in appends]
    figures = {
        "store": uri.split(":", 1)[0],
        "append_seconds_median": statistics.median(times),
        "append_seconds_mean": statistics.mean(times),
        "append_seconds_p95": float(np.percentile(times, 95)),
        "append_seconds_median_by_type": {k: statistics.median(t for kk, t in appends if kk == k) for k in kinds},
        "sizes": rows,
        "ls_searches": args.searches + 1,
        "ls_seconds": ls_s,
        "ls_through_mlflow_seconds": ls_mlflow_s,
        "append_wal_vs_rollback_journal_median_seconds": [statistics.median(same_times), statistics.median(peer_times)]
        if peer_times
        else None,
        "cli_start_seconds": import_s,
    }
    lines = [
        f"# Ledger speed (MLflow on {figures['store']})",
        "",
        f"Written by `bench/ledger.py{' --quick' if args.quick else ''}` on {platform.machine()}, "
        f"{os.cpu_count()} cores. One search grown to {sizes[-1]:,} events through the project's append path "
        f"(proposed / started / completed, every completion with a {weights.stat().st_size // 1024} KiB weights "
        "file), one append call per event. A cold read is `store.log(name).read()` in a fresh process (timed inside "
        "it; the process's imports apart); a warm re-read is the same reader object reading again after one more "
        "event was appended by another writer. Audits and `nas ls` are timed as commands (process start included).",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| append one event, median | {figures['append_seconds_median'] * 1000:.0f} ms |",
        f"| append one event, mean / p95 | {figures['append_seconds_mean'] * 1000:.0f} ms / "
        f"{figures['append_seconds_p95'] * 1000:.0f} ms |",
    ]
    lines += [
        f"| append {k}, median | {v * 1000:.0f} ms |" for k, v in figures["append_seconds_median_by_type"].items()
    ]
    if peer_times:
        lines += [
            f"| same store, {len(peer_times)} more appends, median (write-ahead log) | "
            f"{statistics.median(same_times) * 1000:.0f} ms |",
            f"| peer: a store in SQLite's default rollback-journal mode, {len(peer_times)} appends, median | "
            f"{statistics.median(peer_times) * 1000:.0f} ms "
            f"({statistics.median(peer_times) / statistics.median(same_times):.2f}x) |",
        ]
    lines += [
        f"| `nas ls` over {args.searches + 1} searches (command) | {ls_s:.2f} s |",
        f"| peer: the same listing through MLflow's client (fresh process) | {ls_mlflow_s:.2f} s "
        f"({ls_mlflow_s / ls_s:.1f}x) |",
        f"| `nas --help` (the command's start alone, for comparison) | {import_s:.2f} s |",
        "",
        "| events | cold read | per 1,000 events | warm re-read after one new event | `nas audit --quick` | "
        "`nas audit` (deep) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['events']:,} | {r['cold_read_s']:.2f} s | {1000 * r['cold_read_s'] / r['events']:.2f} s | "
        f"{r['warm_reread_after_one_event_s'] * 1000:.0f} ms | {r['audit_quick_s']:.1f} s | {r['audit_deep_s']:.1f} s |"
        for r in rows
    ]
    lines += [
        "",
        "How a read stays fast and still verified: the parent run's claims (`seq.N` params, one per event, written "
        "once) name every committed hash; records are read from their runs' params in one paged `search_runs` "
        "query (or one query per claimed hash when only a few are new), re-hashed, and checked against the claims "
        "and the chain. No artifact is downloaded to read a log; `nas audit` (deep) also downloads every "
        "`event.json` and weights file, with 8 threads (downloads wait on I/O, not on the 2 cores). `nas ls` reads "
        "each search's parent run (summary tags the runner writes each round), not its events; on a SQLite store it "
        "reads them with one read-only SQL query over MLflow's tables (no MLflow import, which alone takes ~3 s "
        "here); on a tracking server it makes the REST calls MLflow's client would make, with the standard library; on "
        "any other store, or on an answer it does not understand, it lists through MLflow's client (tests hold the "
        "three to the same answer). A SQLite store is put in write-ahead-log mode when opened (the file keeps it).",
        "",
    ]
    RESULTS.mkdir(exist_ok=True)
    suffix = "" if figures["store"] == "sqlite" else f"-{figures['store']}"
    (RESULTS / f"ledger{suffix}.md").write_text("\n".join(lines))
    (RESULTS / f"ledger{suffix}.json").write_text(json.dumps(figures, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
