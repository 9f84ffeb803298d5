"""labnas: hardware-aware NAS and benchmarking for binary neural networks with the Learnable
Activation Binarizer (LAB)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("labnas")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "convert"]


def __getattr__(name: str):
    # ``convert`` needs torch; imported on first use so that ``python -m labnas.run`` needs only TVM and numpy.
    if name == "convert":
        from ._convert import convert

        return convert
    raise AttributeError(f"module 'labnas' has no attribute {name!r}")

