"""The production-shaped stack on one machine, on loopback: PostgreSQL, an MLflow tracking server on it with
basic auth, a Prefect server on it, a process work pool with workers, and the two deployments.

    python -m ops.stack up        # or: bash scripts/stack.sh up   (prints what to export)
    python -m ops.stack status
    python -m ops.stack down      # stops everything; the data stays in the stack folder (--purge removes it)

Everything lives in one folder (``NAS_STACK_DIR``, default ``.stack`` in the repository): the PostgreSQL
cluster, MLflow's artifacts, Prefect's home, logs, pid files and ``secrets.env`` (passwords made on the
first ``up``, mode 600). Clients need only the environment ``client.env`` lists: ``MLFLOW_TRACKING_URI``,
``MLFLOW_TRACKING_USERNAME``, ``MLFLOW_TRACKING_PASSWORD`` and ``PREFECT_API_URL``.

The deployments: ``nas-search/stack`` (the search) and ``nas-train/stack`` (one training). Workers run
with ``NAS_TRAIN_DEPLOYMENT=nas-train/stack``, so a search's trainings are flow runs of their own that any
worker takes: ``search.trainers = k`` trains k models at once on the pool's workers. More machines = more
workers started with the same environment (``prefect worker start --pool nas``); artifacts travel through
the MLflow server (``mlflow-artifacts:``), so workers share no disk.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

ROOT = Path(__file__).parents[1]
BIN = Path(sys.executable).parent
POOL = "nas"
DEPLOYMENT = "stack"
SERVICES = ("postgres", "mlflow", "prefect")
USER = "nas"  # the MLflow user the searches run as, and the PostgreSQL role of both servers


class StackError(RuntimeError):
    """A part of the stack could not be started or reached: the message says which and where its log is."""


def _pg_bin() -> Path:
    """The folder of PostgreSQL's server programs (Debian's postgresql package)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not found:
        raise StackError("PostgreSQL's server is not installed: apt-get install postgresql")
    return found[-1].parent


class Stack:
    """The services of one stack folder: start, stop and reach them."""

    def __init__(self, folder: Path | str | None = None, *, workers: int = 2) -> None:
        self.dir = Path(folder or os.environ.get("NAS_STACK_DIR") or ROOT / ".stack").absolute()
        self.workers = workers
        self.pg_port = int(os.environ.get("NAS_STACK_PG_PORT", "55432"))
        self.mlflow_port = int(os.environ.get("NAS_STACK_MLFLOW_PORT", "5501"))
        self.prefect_port = int(os.environ.get("NAS_STACK_PREFECT_PORT", "4201"))
        self.logs = self.dir / "logs"
        self.pids = self.dir / "pids"

    # --- configuration ----------------------------------------------------------------------------

    def secrets(self) -> dict[str, str]:
        """The stack's passwords, made once and kept in ``secrets.env`` (mode 600)."""
        path = self.dir / "secrets.env"
        if not path.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            values = {
                "NAS_PG_PASSWORD": secrets.token_urlsafe(18),
                "MLFLOW_AUTH_ADMIN_PASSWORD": secrets.token_urlsafe(18),
                "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(32),
                "NAS_MLFLOW_PASSWORD": secrets.token_urlsafe(18),
            }
            path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
            path.chmod(0o600)
        return dict(line.split("=", 1) for line in path.read_text().split())

    def db_url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{USER}:{self.secrets()['NAS_PG_PASSWORD']}@127.0.0.1:{self.pg_port}/{database}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def prefect_url(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}/api"

    def client_env(self) -> dict[str, str]:
        """What a client (a worker, the command line, a test) needs to use the stack."""
        return {
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "MLFLOW_TRACKING_USERNAME": USER,
            "MLFLOW_TRACKING_PASSWORD": self.secrets()["NAS_MLFLOW_PASSWORD"],
            "PREFECT_API_URL": self.prefect_url,
        }

    def _env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_"))}
        env.update(
            PREFECT_HOME=str(self.dir / "prefect"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_API_URL=self.prefect_url,
            TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
        )
        env.update(extra)
        return env

    # --- processes ----------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> int:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.pids.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{name}.log").open("a") as log:
            proc = subprocess.Popen(
                argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        (self.pids / f"{name}.pid").write_text(str(proc.pid))
        return proc.pid

    def pid(self, name: str) -> int | None:
        """The pid of service or worker ``name`` if it runs."""
        path = self.pids / f"{name}.pid"
        if not path.exists():
            return None
        pid = int(path.read_text())
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        try:  # a zombie (our own child, exited) is not running
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return None
        return None if state == "Z" else pid

    def start(self, name: str) -> None:
        """Start service or worker ``name`` if it is not running (and wait until it answers)."""
        starts = {"postgres": self._start_postgres, "mlflow": self._start_mlflow, "prefect": self._start_prefect}
        if name in starts:
            starts[name]()
        elif name in self.worker_names():
            self.start_worker(name)
        else:
            raise StackError(f"no service {name!r}: the stack has {', '.join([*starts, *self.worker_names()])}")

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        """Stop service or worker ``name`` and its process group (SIGKILL after ``timeout``)."""
        if name == "postgres":
            self._pg_ctl("stop", "-m", "fast")
            return
        pid = self.pid(name)
        if pid is None:
            return
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while self.pid(name) is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        if self.pid(name) is not None:
            os.killpg(pid, signal.SIGKILL)

    def _wait(self, name: str, ready: str, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid(name) is None:
                raise StackError(f"{name} exited while starting; see {self.logs / (name + '.log')}")
            if _reachable(ready):
                return
            time.sleep(0.5)
        raise StackError(f"{name} did not answer {ready} within {timeout:.0f} s; see {self.logs / (name + '.log')}")

    # --- PostgreSQL -----------------------------------------------------------------------------------

    def _as_postgres(self, argv: list[str]) -> list[str]:
        """PostgreSQL refuses to run as root: run its programs as the ``postgres`` user then."""
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv

    def _pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        data = self.dir / "pg"
        if not (data / "PG_VERSION").exists():
            return subprocess.CompletedProcess([], 0, "", "")
        argv = self._as_postgres([str(_pg_bin() / "pg_ctl"), "-D", str(data), *args])
        return subprocess.run(argv, capture_output=True, text=True)

    def _start_postgres(self) -> None:
        data, sockets = self.dir / "pg", self.dir / "pg-socket"
        if os.geteuid() == 0:
            blocked = [p for p in [self.dir, *self.dir.parents] if not os.stat(p).st_mode & 0o001]
            if blocked:
                raise StackError(
                    f"PostgreSQL runs as user postgres, which cannot enter {blocked[0]}; "
                    "put the stack in a folder others may enter (NAS_STACK_DIR=/srv/nas-stack, say)"
                )
        sockets.mkdir(parents=True, exist_ok=True)
        if not (data / "PG_VERSION").exists():
            data.mkdir(parents=True, exist_ok=True)
            pwfile = self.dir / "pg-superuser.pw"
            pwfile.write_text(secrets.token_urlsafe(18))
            if os.geteuid() == 0:
                shutil.chown(data, "postgres")
                shutil.chown(sockets, "postgres")
                shutil.chown(pwfile, "postgres")
            initdb = [str(_pg_bin() / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust"]
            initdb += ["--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
            done = subprocess.run(self._as_postgres(initdb), capture_output=True, text=True)
            pwfile.unlink()
            if done.returncode:
                raise StackError(f"initdb failed: {done.stderr.strip()}")
        if self._pg_ctl("status").returncode != 0:
            self.logs.mkdir(parents=True, exist_ok=True)
            log = self.dir / "pg-socket" / "postgres.log"  # writable by postgres; linked from logs/
            options = f"-p {self.pg_port} -k {sockets} -c listen_addresses=127.0.0.1"
            started = self._pg_ctl("-l", str(log), "-o", options, "-w", "-t", "60", "start")
            link = self.logs / "postgres.log"
            if not link.exists():
                link.symlink_to(log)
            if started.returncode:
                raise StackError(f"PostgreSQL did not start: {started.stderr.strip()}; see {log}")
        password = self.secrets()["NAS_PG_PASSWORD"]
        self._psql(
            f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{USER}') "
            f"THEN CREATE ROLE {USER} LOGIN PASSWORD '{password}'; END IF; END$$;"
        )
        existing = self._psql("SELECT datname FROM pg_database").split()
        for database in ("mlflow", "mlflow_auth", "prefect"):  # MLflow and Prefect must not share a database
            if database not in existing:
                self._psql(f"CREATE DATABASE {database} OWNER {USER}")

    def _psql(self, sql: str) -> str:
        psql = _pg_bin() / "psql"
        argv = [str(psql), "-h", str(self.dir / "pg-socket"), "-p", str(self.pg_port), "-U", "postgres"]
        done = subprocess.run(self._as_postgres([*argv, "-d", "postgres", "-tAc", sql]), capture_output=True, text=True)
        if done.returncode:
            raise StackError(f"PostgreSQL refused {sql.split()[0]}: {done.stderr.strip()}")
        return done.stdout

    # --- MLflow -----------------------------------------------------------------------------------

    def _start_mlflow(self) -> None:
        if self.pid("mlflow") is not None:
            return
        ini = self.dir / "basic_auth.ini"
        ini.write_text(
            "[mlflow]\n"
            "default_permission = NO_PERMISSIONS\n"  # a user sees only what it made or was granted
            f"database_uri = {self.db_url('mlflow_auth')}\n"
            "admin_username = admin\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            # A password check is a PBKDF2 hash: without the cache, every request of a search pays it.
            "auth_cache_ttl_seconds = 60\n"
        )
        ini.chmod(0o600)
        s = self.secrets()
        env = self._env(
            MLFLOW_AUTH_CONFIG_PATH=str(ini),
            MLFLOW_AUTH_ADMIN_PASSWORD=s["MLFLOW_AUTH_ADMIN_PASSWORD"],
            MLFLOW_FLASK_SERVER_SECRET_KEY=s["MLFLOW_FLASK_SERVER_SECRET_KEY"],
        )
        argv = [str(BIN / "mlflow"), "server", "--app-name", "basic-auth", "--host", "127.0.0.1"]
        argv += ["--port", str(self.mlflow_port), "--backend-store-uri", self.db_url("mlflow")]
        argv += ["--artifacts-destination", str(self.dir / "artifacts"), "--workers", "2"]
        self._spawn("mlflow", argv, env)
        self._wait("mlflow", f"{self.mlflow_url}/health")
        self._mlflow_user()

    def _mlflow_user(self) -> None:
        """Create the ``nas`` user (it may create experiments; it owns what it creates)."""
        admin = ("admin", self.secrets()["MLFLOW_AUTH_ADMIN_PASSWORD"])
        body = f'{{"username": "{USER}", "password": "{self.secrets()["NAS_MLFLOW_PASSWORD"]}"}}'.encode()
        request = urllib.request.Request(
            f"{self.mlflow_url}/api/2.0/mlflow/users/create",
            data=body,
            headers={"Content-Type": "application/json", "Authorization": _basic(*admin)},
        )
        try:
            urllib.request.urlopen(request, timeout=30).close()
        except urllib.error.HTTPError as e:
            if e.code != 400 or b"already exists" not in e.read():
                raise StackError(f"could not create the MLflow user {USER!r}: HTTP {e.code}") from e

    # --- Prefect ----------------------------------------------------------------------------------

    def _start_prefect(self) -> None:
        if self.pid("prefect") is not None:
            return
        env = self._env(
            PREFECT_API_DATABASE_CONNECTION_URL=self.db_url("prefect", "postgresql+asyncpg"),
            PREFECT_UI_API_URL=self.prefect_url,  # the UI's pages call this API (not the default port's)
        )
        argv = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.prefect_port)]
        self._spawn("prefect", argv, env)
        self._wait("prefect", f"{self.prefect_url}/health")

    def _deploy(self) -> None:
        """The work pool and the two deployments (idempotent: re-running updates them)."""
        env = self._env()
        pool = [str(BIN / "prefect"), "work-pool", "create", POOL, "--type", "process", "--overwrite"]
        done = subprocess.run(pool, env=env, cwd=ROOT, capture_output=True, text=True)
        if done.returncode:
            raise StackError(f"could not create work pool {POOL!r}: {done.stdout}{done.stderr}")
        script = (
            "from flows.nas_search import nas_search\n"
            "from flows.trainings import nas_train\n"
            "entries = ((nas_search, 'flows/nas_search.py:nas_search'), (nas_train, 'flows/trainings.py:nas_train'))\n"
            "for f, entry in entries:\n"
            f"    f.from_source({str(ROOT)!r}, entry).deploy("
            f"name={DEPLOYMENT!r}, work_pool_name={POOL!r}, print_next_steps=False)\n"
        )
        done = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True)
        if done.returncode:
            raise StackError(f"could not deploy the flows: {done.stderr[-2000:]}")

    def worker_names(self) -> list[str]:
        return [f"worker-{i}" for i in range(1, self.workers + 1)]

    def start_worker(self, name: str) -> None:
        if self.pid(name) is not None:
            return
        env = self._env(
            **self.client_env(),
            NAS_TRAIN_DEPLOYMENT=f"nas-train/{DEPLOYMENT}",
            PREFECT_WORKER_QUERY_SECONDS=os.environ.get("PREFECT_WORKER_QUERY_SECONDS", "2"),
            PREFECT_WORKER_HEARTBEAT_SECONDS="10",
        )
        for knob in ("NAS_LEASE_TTL_S", "NAS_TRAINING_LIVENESS_S"):
            if knob in os.environ:
                env[knob] = os.environ[knob]
        argv = [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--type", "process", "--name", name]
        self._spawn(name, argv, env)

    # --- the whole --------------------------------------------------------------------------------

    def up(self) -> None:
        """Start whatever is not running, in order; deploy; start the workers."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._start_postgres()
        self._start_mlflow()
        self._start_prefect()
        self._deploy()
        for name in self.worker_names():
            self.start_worker(name)
        env = self.dir / "client.env"
        env.write_text("".join(f"export {k}={v}\n" for k, v in self.client_env().items()))
        env.chmod(0o600)

    def down(self, purge: bool = False) -> None:
        """Stop the workers, then the servers, then PostgreSQL; ``purge`` also deletes the stack folder."""
        for name in [*sorted(p.stem for p in self.pids.glob("worker-*.pid")), "prefect", "mlflow"]:
            self.stop(name)
            (self.pids / f"{name}.pid").unlink(missing_ok=True)
        self.stop("postgres")
        if purge:
            shutil.rmtree(self.dir, ignore_errors=True)

    def status(self) -> dict[str, str]:
        out = {}
        for name in ("mlflow", "prefect", *self.worker_names()):
            pid = self.pid(name)
            out[name] = f"running (pid {pid})" if pid else "stopped"
        pg_up = (self.dir / "pg" / "PG_VERSION").exists() and self._pg_ctl("status").returncode == 0
        out["postgres"] = "running" if pg_up else "stopped"
        return out


def _basic(user: str, password: str) -> str:
    return "Basic " + b64encode(f"{user}:{password}".encode()).decode()


def _reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status == 200
    except (OSError, ValueError):
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.stack", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("up", "down", "status", "env"))
    parser.add_argument("--dir", help="the stack folder (default: NAS_STACK_DIR or .stack)")
    parser.add_argument("--workers", type=int, default=2, help="process workers in the pool (default 2)")
    parser.add_argument("--purge", action="store_true", help="with down: delete the stack folder too")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers {args.workers}: a pool needs at least one worker")
    stack = Stack(args.dir, workers=args.workers)
    try:
        if args.command == "up":
            stack.up()
            ui = stack.prefect_url.removesuffix("/api")
            print(f"stack up in {stack.dir}: MLflow {stack.mlflow_url}, Prefect {ui}")
            print(f"use it from a shell: source {stack.dir / 'client.env'}")
            print(f"then: prefect deployment run 'nas-search/{DEPLOYMENT}' -p name=my-search --watch")
        elif args.command == "down":
            stack.down(args.purge)
            print(f"stack in {stack.dir} stopped" + (" and deleted" if args.purge else ""))
        elif args.command == "status":
            for name, state in stack.status().items():
                print(f"{name:10} {state}")
        else:
            print("".join(f"export {k}={v}\n" for k, v in stack.client_env().items()), end="")
    except StackError as e:
        print(f"stack: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
