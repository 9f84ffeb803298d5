"""External programs labnas runs (compilers, emulators, LLVM tools): found on PATH, or a message naming the package."""

from __future__ import annotations

import shutil

__all__ = ["find_tool"]


def find_tool(names: str | tuple[str, ...], package: str, error=RuntimeError, who: str = "labnas") -> str:
    """The path of the first of ``names`` on PATH; else raises ``error`` saying which Debian ``package`` provides it."""
    names = (names,) if isinstance(names, str) else names
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise error(f"{who} needs {names[0]}; install it with 'apt-get install {package}'")
