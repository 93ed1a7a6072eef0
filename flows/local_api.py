"""A Prefect API of this process's own, for ``nas search`` and ``nas resume`` when no ``PREFECT_API_URL`` is set.

Prefect's own temporary server outlives a process killed with SIGKILL (its uvicorn child is adopted by init),
and the training-slot limit it serves lives in ``$PREFECT_HOME/prefect.db``, which every temporary server on
the machine shares: a slot held by a killed search stayed taken and every later search waited for it. This
server is the same Prefect server app (UI off, as Prefect's temporary one), started by us so that it dies with
the process that started it, whatever kills it: on Linux the kernel sends it SIGKILL when its parent dies
(``PR_SET_PDEATHSIG``), and everywhere a thread of its own exits when its parent is gone. It runs in its own
process group, so a Ctrl-C at the terminal reaches the search, which stops cleanly and then stops the server.
Flows on it use no global concurrency limit (``shared_api``): one process runs one search, whose round loop
already keeps to ``search.trainers``.

``python -m flows.local_api PARENT_PID PORT`` is the server process itself.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from nas.tracking.locking import folder_lock

PRIVATE = "NAS_PRIVATE_PREFECT_API"  # the URL of the API a process started for itself (set while it runs)
LOG = "nas-local-api.log"  # in $PREFECT_HOME: what the servers of nas processes said
STARTUP_S = 120.0  # a loaded 2-core machine can take a minute to migrate a new database


def shared_api() -> bool:
    """Whether flows here talk to a Prefect API other processes may use too (a server someone started), so that
    a global concurrency limit on it means something; False for Prefect's temporary server and for ours."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    return bool(url) and url != os.environ.get(PRIVATE)


def _free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_env() -> dict[str, str]:
    """The environment of the server: ours, with Prefect's current settings, the UI off and no telemetry."""
    from prefect.settings import get_current_settings

    return {
        **os.environ,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        **get_current_settings().to_environment_variables(exclude_unset=True),
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
    }


def _wait_healthy(process: subprocess.Popen[bytes], url: str, timeout_s: float) -> bool:
    """True once ``url``/health answers 200; False if the process ended first (its port was taken)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    with httpx.Client() as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            try:
                if client.get(f"{url}/health", timeout=2).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    raise RuntimeError(
        f"the temporary Prefect API on {url} did not start within {timeout_s:.0f} s; "
        "start a server (prefect server start) and set PREFECT_API_URL, or try again on a less loaded machine"
    )


def _drain() -> None:
    """Send the logs and events Prefect still holds, while the server is there to take them."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=5)
        except Exception:  # what was not sent is only the flow run's log in a server about to stop
            pass


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


_RUNNING: dict[tuple[int, str], tuple[subprocess.Popen[bytes], str]] = {}  # (our pid, database) -> server, URL


def _stop_all() -> None:
    for key, (process, _) in list(_RUNNING.items()):
        if key[0] == os.getpid():
            _stop(process)
    _RUNNING.clear()


def _start(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A new server on a free loopback port, healthy; its output goes to ``home``/LOG."""
    # Servers starting at once on one new $PREFECT_HOME would migrate its database together, and all but one fail.
    with folder_lock(home), open(home / LOG, "ab") as log:
        for _ in range(5):  # a port found free can be taken before the server binds it: then try another
            port = _free_port()
            url = f"http://127.0.0.1:{port}/api"
            process = subprocess.Popen(
                [sys.executable, "-m", "flows.local_api", str(os.getpid()), str(port)],
                env=_server_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,  # the server's own complaints go to its log, not to the search's output
                start_new_session=True,  # a Ctrl-C at the terminal is for the search, which stops the server after
            )
            try:
                if _wait_healthy(process, url, STARTUP_S):
                    return process, url
            except BaseException:
                _stop(process)
                raise
    raise RuntimeError(
        f"could not start a temporary Prefect API on 127.0.0.1 in 5 tries (see {home / LOG}); start a "
        "server (prefect server start) and set PREFECT_API_URL"
    )


def _server() -> str:
    """The URL of this process's own server for Prefect's current database, started on first use (a few seconds,
    a minute for a new database on a loaded machine) and kept until this process exits."""
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, PREFECT_HOME

    home = Path(PREFECT_HOME.value())
    key = (os.getpid(), str(PREFECT_API_DATABASE_CONNECTION_URL.value() or home))
    known = _RUNNING.get(key)
    if known is not None and known[0].poll() is None:
        return known[1]
    if not _RUNNING:
        atexit.register(_stop_all)
    _RUNNING[key] = _start(home)
    return _RUNNING[key][1]


@contextmanager
def local_api() -> Iterator[str | None]:
    """Run the block against a Prefect API: ``PREFECT_API_URL`` where it is set (yields None), else a server of
    this process's own on loopback (yields its URL). That server is kept for later blocks in this process (a
    Python session running several searches starts one), stopped when the process exits and killed with it."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield None
        return
    url = _server()
    previous = os.environ.get(PRIVATE)
    os.environ[PRIVATE] = url
    try:
        with temporary_settings({PREFECT_API_URL: url, PREFECT_UI_URL: ""}):  # no UI: no "View at" links
            try:
                yield url
            finally:
                _drain()
    finally:
        if previous is None:
            os.environ.pop(PRIVATE, None)
        else:
            os.environ[PRIVATE] = previous


def _die_with(parent: int) -> None:
    """End this process when ``parent`` does: at once on Linux (the kernel's parent-death signal), else within a
    second (a thread that watches who our parent is)."""
    import signal

    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the signal was asked for
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="nas-parent-watch", daemon=True).start()


def _serve(parent: int, port: int) -> None:
    """The server process: the Prefect API on ``127.0.0.1:port`` until ``parent`` ends or we are stopped."""
    _die_with(parent)
    import uvicorn

    uvicorn.run(
        "prefect.server.api.server:create_app", factory=True, host="127.0.0.1", port=port, log_level="error",
        lifespan="on",
    )  # fmt: skip


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]))
