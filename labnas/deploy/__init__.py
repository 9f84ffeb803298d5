"""From a search result to a model on the board: load a spec from any result form, train it, export it."""

from .spec_source import SpecSource, SpecSourceError, load_spec_source

__all__ = ["SpecSource", "SpecSourceError", "load_spec_source"]
