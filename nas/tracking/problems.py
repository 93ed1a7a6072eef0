"""A store that is broken or out of reach, told as one sentence: a corrupt or unreadable SQLite file, a database
MLflow cannot open or upgrade, a tracking server that cannot be reached or refuses the credentials.

``store_problem`` reads an error (and the errors it was raised from) and names what is wrong and where, or
returns None when the error is not about the store (a bug, which deserves its traceback). ``require_store``
stops a command that only reads from creating a store where there is none.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator

from nas.tracking.listing import sqlite_path


def require_store(uri: str) -> None:
    """ValueError when ``uri`` is a SQLite store whose file does not exist (reading it would create it)."""
    path = sqlite_path(uri)
    if path is not None and not path.is_file():
        raise ValueError(
            f"there is no MLflow store at {path}: run nas search in {path.parent} first, "
            "or set MLFLOW_TRACKING_URI to the store that holds your searches"
        )


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _where(uri: str) -> str:
    path = sqlite_path(uri)
    return f"the MLflow store {path}" if path is not None else f"the tracking store {uri}"


def _database_detail(error: BaseException) -> str | None:
    """The database's own complaint, where ``error`` is one (SQLite, or SQLAlchemy around any driver)."""
    if isinstance(error, sqlite3.DatabaseError):
        return str(error)
    sqlalchemy = sys.modules.get("sqlalchemy.exc")
    if sqlalchemy is not None and isinstance(error, sqlalchemy.DBAPIError):
        return str(error.orig).splitlines()[0] if error.orig is not None else str(error).splitlines()[0]
    alembic = sys.modules.get("alembic.util.exc")
    if alembic is not None and isinstance(error, alembic.CommandError):
        return f"its tables could not be created or upgraded: {str(error).splitlines()[0]}"
    return None


def _unreachable(text: str) -> str:
    """Why a server could not be reached, in a few words, from the error's text."""
    for needle, said in (("Connection refused", "connection refused"), ("timed out", "timed out"),
                         ("Name or service not known", "unknown host"), ("nodename nor servname", "unknown host"),
                         ("No route to host", "no route to host")):  # fmt: skip
        if needle in text:
            return said
    return "no answer"


def _server_detail(error: BaseException) -> tuple[str, str] | None:
    """(what happened, the fix) where ``error`` is a tracking server refusing or out of reach."""
    mlflow = sys.modules.get("mlflow.exceptions")
    text = str(error)
    if mlflow is not None and isinstance(error, mlflow.RestException):
        status = getattr(error, "get_http_status_code", lambda: 0)()
        if status in (401, 403) or "Unauthorized" in text or "Permission denied" in text:
            return (
                f"refused the credentials ({status or 'unauthorized'})",
                "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)",
            )
    requests = sys.modules.get("requests.exceptions")
    if (mlflow is not None and isinstance(error, mlflow.MlflowException) and "API request to" in text) or (
        requests is not None and isinstance(error, requests.ConnectionError)
    ):
        return (
            f"cannot be reached ({_unreachable(text)})",
            "check that the server runs and MLFLOW_TRACKING_URI names it",
        )
    return None


def store_problem(error: BaseException, uri: str) -> str | None:
    """One sentence on what is wrong with the store at ``uri`` and what to do, when ``error`` (or an error it was
    raised from) says the store is broken or out of reach; None otherwise."""
    for cause in _chain(error):
        detail = _database_detail(cause)
        if detail is not None:
            path = sqlite_path(uri)
            fix = (
                f"restore {path.name} from a backup, or set MLFLOW_TRACKING_URI to another store"
                if path is not None
                else "check the database behind the tracking server"
            )
            return f"{_where(uri)} cannot be read ({detail}); {fix}"
        server = _server_detail(cause)
        if server is not None:
            return f"{_where(uri)} {server[0]}; {server[1]}"
    return None
