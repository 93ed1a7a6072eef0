"""The search on real services (PostgreSQL, MLflow with basic auth, Prefect server, two process workers), through
``prefect deployment run``, and the failure drills: each ends with ``nas audit`` finding nothing lost or duplicated.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path
from typing import Any

import psutil
import pytest

from nas.ledger.service import SearchService
from nas.tracking import open_store
from ops.stack import USER, Stack
from tests.services.conftest import LEASE_TTL_S, LIVENESS_S, record_fault

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
DEPLOYMENT_RUN = [str(BIN / "prefect"), "deployment", "run", "nas-search/stack"]
SMALL = ["-p", "dataset=digits", "-p", "epochs=1", "-p", 'overrides=["search.initial_width=8", "train.min_steps=0"]']


def env_of(stack: Stack) -> dict[str, str]:
    return stack._env(**stack.client_env())


def deployment_run(stack: Stack, run_name: str, *params: str, watch: bool = True) -> subprocess.CompletedProcess[str]:
    """``prefect deployment run 'nas-search/stack'`` with a flow-run name to find it by."""
    argv = [str(BIN / "prefect"), "deployment", "run", "nas-search/stack", "--flow-run-name", run_name, *params]
    if watch:
        argv += ["--watch", "--watch-timeout", "900", "--watch-interval", "2"]
    return subprocess.run(argv, env=env_of(stack), capture_output=True, text=True, timeout=960)


@contextmanager
def prefect(stack: Stack) -> Iterator[Any]:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: stack.prefect_url}), get_client(sync_client=True) as client:
        yield client


def flow_run(stack: Stack, name: str) -> Any:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with prefect(stack) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])))
    assert len(runs) == 1, f"{len(runs)} flow runs named {name!r}"
    return runs[0]


def wait_until(check: Callable[[], Any], what: str, timeout: float = 600) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")


def final(stack: Stack, name: str, timeout: float = 900) -> Any:
    """The flow run named ``name`` once it is in a final state."""
    return wait_until(
        lambda: (r := flow_run(stack, name)).state and r.state.is_final() and r, f"flow run {name} final", timeout
    )


@pytest.fixture
def mlflow_user(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> str:
    """This process talks to the stack's MLflow as the search user."""
    for key, value in stack.client_env().items():
        if key.startswith("MLFLOW_"):
            monkeypatch.setenv(key, value)
    return stack.mlflow_url


def state_of(name: str, uri: str) -> Any:
    return SearchService(open_store(uri).log(name)).state


def follow(name: str, uri: str) -> Callable[[], Any]:
    """The search's state, caught up incrementally on each call (cheap enough to poll)."""
    service: list[SearchService] = []

    def state() -> Any:
        if not service:
            if open_store(uri).log(name).last_seq() == 0:
                return None
            service.append(SearchService(open_store(uri).log(name)))
        return service[0].refresh()

    return state


def audit(stack: Stack, name: str) -> None:
    done = subprocess.run([str(BIN / "nas"), "audit", name], env=env_of(stack), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "audit passed" in done.stdout, done.stdout


def test_nas_ls_lists_the_servers_searches_through_rest_as_mlflow_does(stack: Stack, mlflow_user: str) -> None:
    """``nas ls`` on a tracking server with basic auth reads the parent runs through the REST API, without
    importing MLflow, and lists what MLflow's client lists."""
    from nas.tracking import list_searches
    from tests.tracking.forge import fake_search

    store = open_store(mlflow_user)
    fake_search(store, "ls-rest")  # one search at least, whatever ran before
    via_rest = list_searches(mlflow_user)
    assert via_rest == store.searches() and "ls-rest" in [s.name for s in via_rest]
    script = "import sys; from nas.tracking import list_searches as ls; print(len(ls()), 'mlflow' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", script], env=env_of(stack), capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.split() == [str(len(via_rest)), "False"], done.stdout + done.stderr
    done = subprocess.run([str(BIN / "nas"), "ls"], env=env_of(stack), capture_output=True, text=True)
    assert done.returncode == 0 and "ls-rest" in done.stdout, done.stdout + done.stderr


# --- auth ------------------------------------------------------------------------------------------------


def test_mlflow_basic_auth_lets_the_search_user_write_and_nobody_else_in(stack: Stack, mlflow_user: str) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_user)
    experiment = client.create_experiment("auth-drill")
    run = client.create_run(experiment)
    client.log_param(run.info.run_id, "written", "yes")
    assert client.get_run(run.info.run_id).data.params == {"written": "yes"}

    def status(method: str, path: str, auth: tuple[str, str] | None, body: bytes | None = None) -> int:
        from ops.stack import _basic

        headers = {"Content-Type": "application/json", **({"Authorization": _basic(*auth)} if auth else {})}
        request = urllib.request.Request(f"{mlflow_user}{path}", data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    read = f"/api/2.0/mlflow/experiments/get?experiment_id={experiment}"
    write = b'{"experiment_id": "%s"}' % experiment.encode()
    assert status("GET", read, None) == 401  # anonymous: cannot read
    assert status("POST", "/api/2.0/mlflow/runs/create", None, write) == 401  # nor write
    assert status("GET", read, (USER, "wrong-password")) == 401
    admin = ("admin", stack.secrets()["MLFLOW_AUTH_ADMIN_PASSWORD"])
    stranger = ("stranger", "a-long-enough-password-1")
    body = b'{"username": "stranger", "password": "a-long-enough-password-1"}'
    assert status("POST", "/api/2.0/mlflow/users/create", admin, body) in (200, 400)
    assert status("GET", read, stranger) == 403  # another user: no permission on the search user's experiment
    assert status("POST", "/api/2.0/mlflow/runs/create", stranger, write) == 403

    os.environ.pop("MLFLOW_TRACKING_USERNAME")
    os.environ.pop("MLFLOW_TRACKING_PASSWORD")
    with pytest.raises(MlflowException, match=r"401|[Uu]nauthori[sz]ed|credentials"):
        MlflowClient(mlflow_user).get_experiment(experiment)


# --- a search through the deployment ---------------------------------------------------------------------


def test_deployment_run_trains_two_models_at_once_on_the_workers_and_audits(stack: Stack, mlflow_user: str) -> None:
    """Also the drill "two deployment runs started at once on one search name": one runs, the other stops."""
    name = "stack-main"
    argv = [str(BIN / "prefect"), "deployment", "run", "nas-search/stack", "-p", f"name={name}"]
    argv += ["-p", "max_models=4", "-p", "trainers=2", *SMALL]
    t0 = time.monotonic()
    both = [
        subprocess.Popen([*argv, "--flow-run-name", f"{name}-{i}"], env=env_of(stack), stdout=subprocess.DEVNULL)
        for i in (1, 2)
    ]
    assert [p.wait(timeout=120) for p in both] == [0, 0]
    runs = [final(stack, f"{name}-{i}") for i in (1, 2)]
    outcomes = sorted((r.state_name, r.state.message or "") for r in runs)
    assert [o[0] for o in outcomes] == ["Completed", "Failed"], outcomes
    refusal = outcomes[1][1]
    assert f"search '{name}' is already being run by flow run" in refusal or "at the same moment" in refusal, refusal
    state = state_of(name, mlflow_user)
    assert state.finished and state.count("trained") == 4
    audit(stack, name)
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with prefect(stack) as client:
        names = [f"{name}-m{i}-1" for i in range(1, 5)]
        trainings = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=names)))
    assert sorted(r.name for r in trainings) == names  # each training was a flow run of nas-train/stack
    assert all(r.state_name == "Completed" and r.parameters["search_id"] == name for r in trainings)
    spans = sorted((r.start_time, r.end_time) for r in trainings)
    assert any(later[0] < earlier[1] for earlier, later in pairwise(spans)), spans  # two at once
    record_fault(
        "two_runs_one_name",
        {
            "stopped_with": refusal.split(": ", 1)[-1][:150],
            "events": state.last_seq,
            "search_s": round(time.monotonic() - t0, 1),
        },
    )


def test_prefect_ui_tells_the_search_story_by_clicking(
    stack: Stack, mlflow_user: str, browser: Any, screenshots: Path
) -> None:
    """As a user watching flows: the finished flow run, named after the search, has task runs named after what
    they do, its trainings as subflow runs named after the model, and a models table (newest version under the
    artifact's key) with the link to the search's MLflow parent run."""
    from playwright.sync_api import expect

    name = "stack-story"
    done = deployment_run(stack, name, "-p", f"name={name}", "-p", "max_models=3", *SMALL)
    assert done.returncode == 0, done.stdout + done.stderr
    run = final(stack, name)
    assert run.state_name == "Completed"
    parent_id = open_store(mlflow_user).runs(name).parent_id
    assert parent_id is not None
    page = browser.new_page(viewport={"width": 1400, "height": 950})
    try:
        page.goto(f"{stack.prefect_url.removesuffix('/api')}/runs/flow-run/{run.id}")
        tabs = page.get_by_role("tablist")
        expect(tabs).to_be_visible(timeout=60_000)  # the UI found its API (PREFECT_UI_API_URL on another port)
        tabs.get_by_text("Task Runs", exact=True).click()
        expect(page.get_by_text("propose m3", exact=True)).to_be_visible(timeout=30_000)
        expect(page.get_by_text("refit", exact=True).first).to_be_visible()
        page.screenshot(path=screenshots / "prefect-1-task-runs.png")
        tabs.get_by_text("Subflow Runs", exact=True).click()
        expect(page.get_by_text(f"{name}-m3-1", exact=True)).to_be_visible(timeout=30_000)
        tabs.get_by_text("Artifacts", exact=True).click()
        expect(page.get_by_text(f"nas-{name}-progress", exact=True)).to_be_visible(timeout=30_000)
        page.screenshot(path=screenshots / "prefect-2-artifacts.png")
        page.get_by_text(f"models of search {name} so far").first.click()
        page.get_by_role("link", name=f"nas-{name}", exact=True).first.click()  # the key: its versions
        page.wait_for_url(re.compile(r"/artifacts/key/"))
        page.get_by_role("listitem").get_by_role("heading").get_by_role("link").first.click()  # the newest
        expect(page.get_by_text(re.compile(r"Status: finished \(max_models=3 reached\)"))).to_be_visible(timeout=30_000)
        expect(page.get_by_role("row", name=re.compile(r"^m3 .* trained "))).to_be_visible()
        expect(page.locator(f"a[href*='/runs/{parent_id}']")).to_be_visible()
        page.screenshot(path=screenshots / "prefect-3-models-table.png", full_page=True)
    finally:
        page.close()


# --- drills ----------------------------------------------------------------------------------------------


def test_drill_mlflow_server_down_for_20_s_mid_search(stack: Stack, mlflow_user: str) -> None:
    name = "drill-mlflow"
    started = deployment_run(stack, name, "-p", f"name={name}", "-p", "max_models=3", *SMALL, watch=False)
    assert started.returncode == 0, started.stdout + started.stderr
    now = follow(name, mlflow_user)
    wait_until(lambda: (state := now()) and state.count("trained") >= 1, "a first trained model")
    before = open_store(mlflow_user).log(name).last_seq()
    down_at = time.monotonic()
    stack.stop("mlflow")
    time.sleep(20)
    stack.start("mlflow")
    up_at = time.monotonic()
    wait_until(lambda: open_store(mlflow_user).log(name).last_seq() > before, "an event after the outage")
    recovered = time.monotonic() - up_at
    run = final(stack, name)
    assert run.state_name == "Completed", run.state.message
    state = state_of(name, mlflow_user)
    assert state.finished and state.count("trained") == 3
    audit(stack, name)
    record_fault(
        "mlflow_outage",
        {
            "outage_s": round(up_at - down_at, 1),  # stop, 20 s down, start until it answers
            "events_before": before,
            "events_after": state.last_seq,
            "first_event_after_restart_s": round(recovered, 1),
            "trained": state.count("trained"),
        },
    )


def _process_of(flow_run_id: Any) -> psutil.Process:
    """The process that runs flow run ``flow_run_id``: the root of the processes with its id in their environment
    (its children, such as MLflow's git calls, inherit the id; once pids wrap around a child's pid may be lower)."""
    runs: dict[int, tuple[psutil.Process, int]] = {}
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("PREFECT__FLOW_RUN_ID") == str(flow_run_id):
                runs[proc.pid] = (proc, proc.ppid())
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    roots = [proc for proc, parent in runs.values() if parent not in runs]
    if not roots:
        raise LookupError(f"no process runs flow run {flow_run_id}")
    return min(roots, key=lambda proc: proc.create_time())


def test_drill_worker_killed_mid_training(stack: Stack, mlflow_user: str) -> None:
    """SIGKILL the worker running a training (and the training), as if its machine died. If the search's own flow
    run was on that worker it dies too (its output went through the worker): then the deployment is run again,
    as an operator would. Either way the lost training is dispatched again and the search completes."""
    name = "drill-worker"
    longer = [*SMALL[:2], "-p", "epochs=3", *SMALL[4:]]  # a wider window to strike in
    params = ["-p", f"name={name}", "-p", "max_models=3", *longer]
    started = deployment_run(stack, name, *params, watch=False)
    assert started.returncode == 0, started.stdout + started.stderr
    now = follow(name, mlflow_user)
    wait_until(lambda: (state := now()) and state.count("trained") >= 1, "a first trained model")

    def training_now() -> tuple[Any, psutil.Process] | None:
        for model in now().models.values():
            run = _maybe_run(stack, f"{name}-{model.model_id}-1") if model.status == "training" else None
            if run is not None and run.state_name == "Running":
                try:
                    return model, _process_of(run.id)
                except LookupError:  # it just ended
                    return None
        return None

    victim, training = wait_until(training_now, "a model in training")
    search = _process_of(flow_run(stack, name).id)
    workers = {stack.pid(n): n for n in stack.worker_names()}
    chain = [training]
    for ancestor in training.parents():
        chain.append(ancestor)
        if ancestor.pid in workers:
            break
    worker_name = workers[chain[-1].pid]  # KeyError if no worker runs this training
    events_before = open_store(mlflow_user).log(name).last_seq()
    for proc in reversed(chain):
        proc.kill()  # SIGKILL, the worker first: the machine is gone
    killed_at = time.monotonic()
    ending = name

    def next_step() -> Any:
        retried = _maybe_run(stack, f"{name}-{victim.model_id}-2")
        if retried is not None:
            return retried
        searching = flow_run(stack, name)
        return "search died" if searching.state.is_final() or _gone(search) else None

    retried = wait_until(next_step, "the training dispatched again, or the search gone")
    if retried == "search died":
        time.sleep(max(0.0, LEASE_TTL_S + 2 - (time.monotonic() - killed_at)))  # its lease must expire first
        ending = f"{name}-again"
        assert deployment_run(stack, ending, *params, watch=False).returncode == 0
        retried = wait_until(lambda: _maybe_run(stack, f"{name}-{victim.model_id}-2"), "the training again")
    redispatched = time.monotonic() - killed_at
    result = final(stack, ending)
    assert result.state_name == "Completed", result.state.message
    assert flow_run(stack, f"{name}-{victim.model_id}-1").state_name == "Crashed"
    assert final(stack, retried.name).state_name == "Completed"
    state = now()
    assert state.models[victim.model_id].status == "trained" and state.models[victim.model_id].attempts == 2
    assert state.finished and state.count("trained") == 3
    audit(stack, name)
    stack.start(worker_name)
    record_fault(
        "worker_sigkill",
        {
            "killed": f"{worker_name} and the training of {victim.model_id}",
            "search": "died with it; the deployment was run again" if ending != name else "survived on the other",
            "liveness_s": LIVENESS_S,
            "redispatched_after_s": round(redispatched, 1),
            "events_before": events_before,
            "events_after": state.last_seq,
            "trained": state.count("trained"),
        },
    )


def _gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _maybe_run(stack: Stack, name: str) -> Any:
    try:
        return flow_run(stack, name)
    except AssertionError:
        return None


def test_drill_flow_killed_then_run_again_resumes(stack: Stack, mlflow_user: str) -> None:
    name = "drill-resume"
    params = ["-p", f"name={name}", "-p", "max_models=3", *SMALL]
    assert deployment_run(stack, f"{name}-a", *params, watch=False).returncode == 0
    now = follow(name, mlflow_user)
    wait_until(lambda: (state := now()) and state.count("trained") >= 1, "a first trained model")
    first = flow_run(stack, f"{name}-a")
    _process_of(first.id).kill()
    killed_at = time.monotonic()
    events_before = open_store(mlflow_user).log(name).last_seq()

    # At once: the dead runner was a process of this host, so its lease is free without waiting for it to expire
    # (a holder elsewhere is waited for until its heartbeat is older than the TTL: tests/ledger/test_contract.py).
    resumed = deployment_run(stack, f"{name}-b", *params)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    recovered = time.monotonic() - killed_at
    assert flow_run(stack, f"{name}-a").state_name == "Crashed"  # the takeover marked the dead run
    state = state_of(name, mlflow_user)
    assert state.finished and state.count("trained") == 3
    audit(stack, name)
    record_fault(
        "flow_sigkill_resume",
        {
            "lease_ttl_s": LEASE_TTL_S,
            "events_before": events_before,
            "events_after": state.last_seq,
            "kill_to_finished_s": round(recovered, 1),
            "trained": state.count("trained"),
        },
    )


BAD = {  # search name: (parameters, what the message must name)
    "bad-strategy": (["-p", "strategy=nope"], "search.strategy='nope' must be one of"),
    "bad-budget": (["-p", "time_budget_s=-5"], "search.time_budget_s=-5.0 must be a positive number"),
    "bad-dataset": (["-p", "dataset=no-such-data"], "unknown dataset 'no-such-data'"),
    "bad-override": (["-p", 'overrides=["search.max_models=lots"]'], "search.max_models"),
}


def test_bad_input_through_deployment_run_fails_fast_and_logs_nothing(stack: Stack, mlflow_user: str) -> None:
    t0 = time.monotonic()
    runs = {
        name: subprocess.Popen(
            [*DEPLOYMENT_RUN, "--flow-run-name", name, "-p", f"name={name}", *params],
            env=env_of(stack),
            stdout=subprocess.DEVNULL,
        )
        for name, (params, _) in BAD.items()
    }
    assert all(p.wait(timeout=120) == 0 for p in runs.values())
    for name, (_, says) in BAD.items():
        run = final(stack, name, timeout=300)
        assert run.state_name == "Failed" and says in run.state.message, (name, run.state.message)
        assert not open_store(mlflow_user).exists(name)  # no event, not even a parent run
    record_fault(
        "bad_input",
        {
            "cases": ", ".join(" ".join(p[1::2]) for p, _ in BAD.values()),
            "all_failed_within_s": round(time.monotonic() - t0, 1),
        },
    )


def test_malformed_parameter_is_refused_before_a_flow_run_exists(stack: Stack) -> None:
    done = deployment_run(stack, "bad-type", "-p", "name=bad-type", "-p", "max_models=lots")
    assert done.returncode != 0
    assert "max_models" in done.stdout + done.stderr
    assert _maybe_run(stack, "bad-type") is None
