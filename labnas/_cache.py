"""labnas' per-user cache folder and its small JSON tables (kernel strategies, reference calibrations).

``~/.cache/labnas`` unless ``LABNAS_CACHE`` names another folder; read at each call, so a test or a user can move
it for one process.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["cache_dir", "read_json", "write_json_atomic"]


def cache_dir() -> Path:
    return Path(os.environ.get("LABNAS_CACHE", Path.home() / ".cache" / "labnas"))


def read_json(path: Path) -> dict:
    """A cached JSON table, or ``{}`` when it is missing or unreadable (a cache is never worth an error)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` through a per-process temporary file and a rename, so concurrent writers never leave a
    torn file; an unwritable folder is ignored (the value is measured again next time)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(path)
    except OSError:
        pass
