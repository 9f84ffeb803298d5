"""labnas: hardware-aware NAS and benchmarking for binary neural networks with the Learnable
Activation Binarizer (LAB)."""

from importlib.metadata import PackageNotFoundError, version

from .convert import convert

try:
    __version__ = version("labnas")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "convert"]
