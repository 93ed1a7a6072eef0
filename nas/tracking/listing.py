"""Listing searches from their parent runs' summary tags, and doing it without importing MLflow.

``nas ls`` should answer in well under the ~3 s it takes to import MLflow. On a ``sqlite:///`` store,
``sqlite_searches`` reads the parent runs' tags and counts their claims with one read-only query over
MLflow's tables, the same rows ``MlflowClient.search_runs`` reads; any surprise in the schema (another
MLflow version) is an ``sqlite3.Error``, and the caller then lists through MLflow. On a tracking server,
``rest_searches`` makes the REST calls the client would make (``experiments/get-by-name``, ``runs/search``)
with the standard library, with the client's credentials (``MLFLOW_TRACKING_TOKEN``, or
``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD``) and TLS settings; an answer it does not
understand is an ``OSError`` or ``ValueError``, and the caller lists through MLflow. Tests hold every way of
listing to the same answer.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sqlite3
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from nas.ledger.ports import SearchListing
from nas.tracking.runs import CLAIM, SEARCHES_FILTER

ROLE_QUERY = """
SELECT r.run_uuid, r.name, t.key, t.value FROM runs r
JOIN experiments e ON e.experiment_id = r.experiment_id
JOIN tags t ON t.run_uuid = r.run_uuid AND t.key LIKE 'nas.%'
WHERE e.name = ? AND e.lifecycle_stage = 'active' AND r.lifecycle_stage = 'active'
  AND EXISTS (SELECT 1 FROM tags s WHERE s.run_uuid = r.run_uuid AND s.key = 'nas.role' AND s.value = 'search')
"""
CLAIMS_QUERY = """
SELECT p.run_uuid, COUNT(*) FROM params p
WHERE p.run_uuid IN (SELECT value FROM json_each(?)) AND p.key GLOB 'seq.[0-9][0-9][0-9][0-9][0-9][0-9]'
GROUP BY p.run_uuid
"""


def summarise(tags: Mapping[str, str], run_name: str, events: int) -> SearchListing:
    """A search as its parent run's summary tags describe it (``events`` committed claims); ``problem`` when
    they cannot."""
    name = tags.get("nas.search_id", run_name)
    if not events:
        return SearchListing(name, problem="no SearchStarted: nothing was logged (an empty or decoy parent run)")
    if "nas.status" not in tags:
        # its runner died before publishing a first summary: stale, so the lister summarises its events
        return SearchListing(name, events=events, problem="no summary yet: see nas replay " + name, stale=True)
    try:
        values = {k.removeprefix("nas."): v for k, v in tags.items() if k.startswith("nas.")}
        return SearchListing.from_summary(name, values, events)
    except ValueError as e:
        return SearchListing(name, events=events, problem=f"its summary tags are not readable ({e}): run nas audit")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI, or None for any other kind of store."""
    match = re.fullmatch(r"sqlite:///(.+)", uri)
    return Path(unquote(match.group(1))) if match else None


def sqlite_searches(path: Path, experiment: str) -> list[SearchListing]:
    """The searches of experiment ``experiment`` in the MLflow SQLite database ``path``, sorted by name, read
    without writing (sqlite3.Error when the file is not such a database)."""
    if not path.is_file():
        return []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
        runs: dict[str, tuple[str, dict[str, str]]] = {}
        for run_id, run_name, key, value in db.execute(ROLE_QUERY, (experiment,)):
            runs.setdefault(run_id, (run_name or run_id, {}))[1][key] = value
        claims = dict(db.execute(CLAIMS_QUERY, (json.dumps(sorted(runs)),)).fetchall())
    listed = [summarise(tags, name, claims.get(run_id, 0)) for run_id, (name, tags) in runs.items()]
    return sorted(listed, key=lambda listing: listing.name)


def _rest(base: str, endpoint: str, body: dict[str, Any] | None = None, timeout_s: float = 30.0) -> dict[str, Any]:
    """One call of MLflow's REST API at ``base`` (GET without ``body``, else POST), as the MLflow client would
    authenticate it; the decoded JSON answer."""
    headers = {"Content-Type": "application/json"}
    token, user = os.environ.get("MLFLOW_TRACKING_TOKEN"), os.environ.get("MLFLOW_TRACKING_USERNAME")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    elif user:
        secret = base64.b64encode(f"{user}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}".encode()).decode()
        headers["Authorization"] = f"Basic {secret}"
    context = None
    if base.startswith("https://"):
        context = ssl.create_default_context(cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None)
        if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{base.rstrip('/')}/api/2.0/mlflow/{endpoint}", data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout_s, context=context) as response:
        answer = json.loads(response.read() or b"{}")
    if not isinstance(answer, dict):
        raise ValueError(f"{endpoint} answered {type(answer).__name__}, not an object")
    return answer


def rest_searches(base: str, experiment: str) -> list[SearchListing]:
    """The searches of experiment ``experiment`` on the MLflow tracking server at ``base`` (an http(s) URI),
    sorted by name: the parent runs the client's ``search_runs`` would return, read through the REST API.
    OSError when the server cannot be reached or refuses, ValueError or KeyError when it answers otherwise
    than MLflow does."""
    try:
        found = _rest(base, f"experiments/get-by-name?experiment_name={quote(experiment)}")
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return []  # no such experiment: no searches yet
        raise
    experiment_id = str(found["experiment"]["experiment_id"])
    listed, token = [], None
    while True:
        query: dict[str, Any] = {"experiment_ids": [experiment_id], "filter": SEARCHES_FILTER, "max_results": 1000}
        if token:
            query["page_token"] = token
        page = _rest(base, "runs/search", query)
        for run in page.get("runs", []):
            info, data = run["info"], run.get("data", {})
            tags = {t["key"]: t["value"] for t in data.get("tags", [])}
            claims = sum(1 for p in data.get("params", []) if CLAIM.match(p["key"]))
            listed.append(summarise(tags, info.get("run_name") or info["run_id"], claims))
        token = page.get("next_page_token")
        if not token:
            break
    return sorted(listed, key=lambda listing: listing.name)
