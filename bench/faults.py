"""The failure drills on the service stack, with what they measured: recovery times and events before and after.

Runs the drills of ``tests/services/test_stack.py`` (the same code CI runs, asserting that nothing is lost or
duplicated, by ``nas audit``) with ``NAS_FAULTS_OUT`` set, then writes ``bench/results/faults.md`` and
``faults.json``.

    .venv/bin/python bench/faults.py      # ~10 minutes on 2 cores: starts and stops its own stack
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
RESULTS = ROOT / "bench" / "results"

WHAT = {
    "mlflow_outage": "MLflow server stopped for 20 s mid-search, then restarted",
    "worker_sigkill": "a worker and its training SIGKILLed mid-training",
    "flow_sigkill_resume": "the search's flow process SIGKILLed, the deployment run again with the same name",
    "two_runs_one_name": "two deployment runs started at once on one search name",
    "bad_input": "bad input through `prefect deployment run`",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--append", metavar="JSONL", help="add to the figures of an earlier run (with -k: rerun some)")
    parser.add_argument("-k", dest="select", help="only the drills pytest's -k selects")
    args = parser.parse_args()
    out = Path(args.append) if args.append else Path(tempfile.mkdtemp(prefix="nas-faults-")) / "faults.jsonl"
    print(f"figures go to {out}", flush=True)
    started = time.monotonic()
    select = ["-k", args.select] if args.select else []
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/services/test_stack.py", *select],
        cwd=ROOT,
        env={**os.environ, "NAS_FAULTS_OUT": str(out)},
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "faults.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = [
        "# Failure drills on the service stack",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.python_version()}; "
        f"{time.strftime('%Y-%m-%d')}. Stack: PostgreSQL, `mlflow server` (basic auth) and Prefect server "
        "on it, two process workers. Searches: digits, 1 epoch, initial width 8, 2-4 models. "
        f"Tests {'passed' if done.returncode == 0 else 'FAILED'}"
        + (f" ({time.monotonic() - started:.0f} s in all). " if not args.append else " (the last batch of drills). ")
        + "Each drill ends with `nas audit` passing: no gap, no duplicate run, no model with two outcomes.",
        "",
        "| drill | what | measured |",
        "|---|---|---|",
    ]
    for row in rows:
        drill = row.pop("drill")
        figures = ", ".join(f"{k} = {v}" for k, v in row.items())
        lines.append(f"| {drill} | {WHAT.get(drill, drill)} | {figures} |")
    lines += [
        "",
        "Reading the figures: `events_before` is the log's last seq when the fault struck, `events_after` at the "
        "end; the search finished with every model trained once. Recovery waits are set by the stack's knobs: "
        "`NAS_TRAINING_LIVENESS_S` (a training with no heartbeat for that long is dispatched again) and "
        "`NAS_LEASE_TTL_S` (a dead runner's lease expires after that long), both 20 s in the drills "
        "(defaults 30 s and 60 s); MLflow's client retries with backoff "
        "(`MLFLOW_HTTP_REQUEST_MAX_RETRIES`, default 7, factor 2) through the outage.",
    ]
    (RESULTS / "faults.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
