"""The base of labnas' user-facing errors, and how their fixes name options.

A library error says what is wrong and how to fix it, and the fix usually names a setting: ``data_dir`` to
a Python caller, ``--data-dir`` to someone at the command line. Messages therefore name settings as
``{opt:NAME}`` (or ``{opt:NAME|--flag}`` where the flag is spelt differently): ``str(err)`` shows the
Python name, :func:`for_cli` the flag. The library never has to know which front end called it.

    >>> str(LabnasError("no data; pass {opt:data_dir}"))
    'no data; pass data_dir'
    >>> for_cli(LabnasError("no data; pass {opt:data_dir}"))
    'no data; pass --data-dir'
"""

from __future__ import annotations

import re

__all__ = ["LabnasError", "for_cli"]

_OPTION = re.compile(r"\{opt:([A-Za-z_][A-Za-z0-9_]*)(?:\|([^}]+))?\}")


def _python(match: re.Match) -> str:
    return match.group(1)


def _flag(match: re.Match) -> str:
    return match.group(2) or "--" + match.group(1).replace("_", "-")


class LabnasError(Exception):
    """An error whose message the user can act on; options in it are written ``{opt:NAME}`` (see the module)."""

    def __str__(self) -> str:
        return _OPTION.sub(_python, super().__str__())


def for_cli(err: BaseException) -> str:
    """The message of ``err`` with its options named as command-line flags."""
    if isinstance(err, LabnasError):
        return _OPTION.sub(_flag, Exception.__str__(err))
    return str(err)
