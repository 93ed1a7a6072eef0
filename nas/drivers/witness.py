"""Anchors: a search's head (seq and hash) kept outside the store, so a rewritten store is caught.

A runner appends every event's seq and hash to a witness file as it writes it, and every ``nas search``,
``nas resume`` and passing ``nas audit`` appends the head it saw (``NAS_WITNESS``, default
``nas-witness.jsonl`` in the working directory), one JSON object a line; the
DVC pipeline also writes the head into ``metrics/search.json``, which Git holds. ``nas audit`` and
``nas resume`` check the log against every anchor of the search found there: a log that no longer holds
an anchored head was truncated, re-chained or rolled back. An anchor protects what it saw; events added
after the last anchor are protected by the chain and, with ``NAS_LEDGER_KEY``, by their seals.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from nas.ledger.log import Head

DEFAULT_WITNESS = "nas-witness.jsonl"


def witness_path() -> Path:
    """The witness file: ``NAS_WITNESS`` or ``nas-witness.jsonl`` in the working directory."""
    return Path(os.environ.get("NAS_WITNESS") or DEFAULT_WITNESS)


def witness(search: str, heads: Head | list[Head], store: str, by: str, path: Path | None = None) -> Path | None:
    """Append ``heads`` of ``search`` (each a seq and its hash) to the witness file; None (and a warning printed)
    if it cannot be written. The runner witnesses every event as it is written, so a later change is named by
    the first seq it touched."""
    path = path or witness_path()
    now = time.time()
    lines = [
        json.dumps(
            {"search": search, "seq": h.seq, "hash": h.hash, "store": store, "by": by, "at": now}, sort_keys=True
        )
        for h in ([heads] if isinstance(heads, Head) else heads)
    ]
    try:
        with path.open("a") as f:
            f.write("".join(line + "\n" for line in lines))
    except OSError as e:
        print(f"could not write to the witness file {path} ({e}); set NAS_WITNESS to a writable file")
        return None
    return path


def anchors_in(path: Path, search: str, store: str | None = None) -> list[Head]:
    """The anchored heads of ``search`` in a witness file (of ``store`` if given) or in a JSON output with a
    ``head`` field (``metrics/search.json``); ValueError naming the file if it cannot be read."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(f"anchor file {str(path)!r} cannot be read ({e})") from e
    heads = []
    try:
        whole = json.loads(text)
    except ValueError:
        whole = None
    entries = [whole] if isinstance(whole, dict) else []
    if whole is None:
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except ValueError as e:
                raise ValueError(f"line {n} of anchor file {str(path)!r} is not JSON ({e})") from e
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("search") != search:
            continue
        if store is not None and entry.get("store") not in (None, store):
            continue
        if "head" in entry:
            heads.append(Head.parse(str(entry["head"])))
        elif "seq" in entry and "hash" in entry:
            heads.append(Head.parse(f"{entry['seq']}:{entry['hash']}"))
    return heads


def parse_anchor(value: str, search: str, store: str) -> list[Head]:
    """``--anchor`` as given: ``SEQ:HASH``, or a file (witness file, or a JSON output with a head)."""
    if ":" in value and not Path(value).exists():
        return [Head.parse(value)]
    path = Path(value)
    if not path.exists():
        raise ValueError(f"--anchor {value!r} is neither SEQ:HASH nor an existing file")
    heads = anchors_in(path, search, store)
    if not heads:
        raise ValueError(f"anchor file {value!r} holds no head of search {search!r}")
    return heads


def default_anchors(search: str, store: str) -> list[Head]:
    """The anchors of ``search`` in the default witness file (none if there is no such file)."""
    path = witness_path()
    return anchors_in(path, search, store) if path.exists() else []
