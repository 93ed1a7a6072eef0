"""The failure drills, with what they measured: recovery times and events before and after.

Runs the drills of ``tests/drivers/test_faults.py`` (the default path: no servers) and of
``tests/services/test_stack.py`` (the service stack): the same code CI runs, asserting that nothing is lost or
trained twice, with ``NAS_FAULTS_OUT`` set; then writes ``bench/results/faults.md`` and ``faults.json``. A suite
not run this time keeps its figures from ``faults.json``, with their date.

    .venv/bin/python bench/faults.py                  # both suites, ~20 minutes on 2 cores
    .venv/bin/python bench/faults.py --suite local    # the default path only, ~6 minutes
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
STACK_DRILLS = {"mlflow_outage", "worker_sigkill", "flow_sigkill_resume", "two_runs_one_name", "bad_input"}
SUITES = {"local": "tests/drivers/test_faults.py", "stack": "tests/services/test_stack.py"}
TITLES = {
    "local": "Default path: `nas` in a user's folder, local SQLite store, no servers",
    "stack": "Service stack: PostgreSQL, `mlflow server` (basic auth), Prefect server, two process workers",
}

WHAT = {
    "local_flow_sigkill_resume": "flow-mode `nas search` SIGKILLed mid-training; `nas resume` and a search in "
    "another folder started at once (same Prefect home)",
    "flow_sigint": "Ctrl-C (SIGINT to the job) mid-training, flow mode",
    "local_sigint": "Ctrl-C mid-training, `--local`",
    "flow_sigterm": "SIGTERM mid-training, flow mode",
    "corrupt_store": "`mlflow.db` cut to half its size, then every command",
    "missing_artifacts": "`mlruns/` deleted, then audit, replay --verify, resume, register",
    "two_searches_one_fresh_folder": "two `nas search` of one name started at once in a folder with no store",
    "mlflow_outage": "MLflow server stopped for 20 s mid-search, then restarted",
    "worker_sigkill": "a worker and its training SIGKILLed mid-training",
    "flow_sigkill_resume": "the search's flow process SIGKILLed, the deployment run again with the same name",
    "two_runs_one_name": "two deployment runs started at once on one search name",
    "bad_input": "bad input through `prefect deployment run`",
}
READING = {
    "local": "A training cut short by a kill or a stop logs no outcome and is trained again on resume: "
    "`models_retrained` counts models trained to their end twice. Before the fix the killed search's training "
    "slot stayed taken in `$PREFECT_HOME/prefect.db` and every later flow-mode search on the machine waited "
    "10 minutes and more; its Prefect server lived on. `signal_to_exit_s` includes publishing the best model "
    "so far to MLflow (about 10 s of it).",
    "stack": "`events_before` is the log's last seq when the fault struck, `events_after` at the end; the search "
    "finished with every model trained once. Recovery waits are set by the stack's knobs: "
    "`NAS_TRAINING_LIVENESS_S` (a training with no heartbeat for that long is dispatched again) and "
    "`NAS_LEASE_TTL_S` (a dead runner's lease expires after that long), both 20 s in the drills (defaults 30 s "
    "and 60 s); MLflow's client retries with backoff (`MLFLOW_HTTP_REQUEST_MAX_RETRIES`, default 7, factor 2) "
    "through the outage.",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=[*SUITES, "all"], default="all")
    parser.add_argument("-k", dest="select", help="only the drills pytest's -k selects (the others keep theirs)")
    args = parser.parse_args()
    suites = list(SUITES) if args.suite == "all" else [args.suite]
    out = Path(tempfile.mkdtemp(prefix="nas-faults-")) / "faults.jsonl"
    print(f"figures go to {out}", flush=True)
    select = ["-k", args.select] if args.select else []
    status = {}
    for suite in suites:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", SUITES[suite], *select],
            cwd=ROOT,
            env={**os.environ, "NAS_FAULTS_OUT": str(out)},
        )
        status[suite] = f"{'passed' if done.returncode == 0 else 'FAILED'} in {time.monotonic() - started:.0f} s"
    today = time.strftime("%Y-%m-%d")
    fresh = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    for row in fresh:
        row["suite"] = "stack" if row["drill"] in STACK_DRILLS else "local"
        row["date"] = today
    kept = json.loads((RESULTS / "faults.json").read_text()) if (RESULTS / "faults.json").exists() else []
    ran = {row["drill"] for row in fresh}
    rows = [r for r in kept if r["drill"] not in ran] + fresh
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "faults.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = [
        "# Failure drills: what a fault costs and what it loses",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}. Searches: "
        "digits, initial width 8, 1-2 models. Each drill asserts that nothing was lost or trained twice, and "
        "ends with `nas audit` passing where a search remains. "
        + "; ".join(f"This run: {suite} drills {how}" for suite, how in status.items()),
    ]
    for suite in SUITES:
        of = [r for r in rows if r.get("suite", "stack") == suite]
        if not of:
            continue
        dates = sorted({r.get("date", "2026-11-23") for r in of})
        lines += ["", f"## {TITLES[suite]}", "", f"Measured {', '.join(dates)}.", "", "| drill | what | measured |",
                  "|---|---|---|"]  # fmt: skip
        for row in of:
            figures = ", ".join(f"{k} = {v}" for k, v in row.items() if k not in ("drill", "suite", "date"))
            lines.append(f"| {row['drill']} | {WHAT.get(row['drill'], row['drill'])} | {figures} |")
        lines += ["", READING[suite]]
    (RESULTS / "faults.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(s.startswith("passed") for s in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
