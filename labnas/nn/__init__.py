"""BNN layers: activation binarizers (sign family, LAB, local thresholds) and the binary convolution."""

from .binarizers import (
    BINARIZERS,
    LAB,
    ApproxSign,
    Binarizer,
    Niblack,
    RSign,
    Sauvola,
    SteSign,
    centre_crop,
    get_binarizer,
    hard_sign,
)
from .conv import WEIGHT_SCALES, BinaryConv2d, binarize_weight

__all__ = [
    "BINARIZERS",
    "LAB",
    "ApproxSign",
    "Binarizer",
    "BinaryConv2d",
    "Niblack",
    "RSign",
    "Sauvola",
    "SteSign",
    "WEIGHT_SCALES",
    "binarize_weight",
    "centre_crop",
    "get_binarizer",
    "hard_sign",
]
