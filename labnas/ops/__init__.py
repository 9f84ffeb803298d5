"""Operation counting (BOPs, FLOPs, OPs) with fvcore and thop, cross-checked."""

from .counting import AGREEMENT_TOLERANCE, OpCount, count_ops

__all__ = ["AGREEMENT_TOLERANCE", "OpCount", "count_ops"]
