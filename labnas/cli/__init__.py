"""The ``labnas`` command line, one module per verb group over the Python API: :mod:`.search` (``search``),
:mod:`.profile` (``profile``), :mod:`.report` (``plot``, ``report``), :mod:`.deploy` (``train``, ``export``),
:mod:`.main` (the parser, ``ops``, ``list``, error handling), :mod:`.common` (arguments several verbs share).
Tests call :func:`main` with an argument list in-process."""

from .common import UserError
from .main import build_parser, main

__all__ = ["UserError", "build_parser", "main"]
