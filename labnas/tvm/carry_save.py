"""Carry-save (Harley-Seal) popcount of a sum of words, as one TIR expression.

A binary conv output is ``sum_i popcount(e_i)`` over ``T = k^2 ceil(C / 64)`` xor'd words ``e_i``. On
AVX2 a vector popcount is a nibble table (``vpsrlw``, two ``vpand``, two ``vpshufb``, ``vpaddb``,
``vpsadbw``: seven instructions per register, plus the accumulate), while a full adder over three words is
five logic instructions:

    sum   = p ^ q ^ r
    carry = (p & q) | (r & (p ^ q))        popcount(p) + popcount(q) + popcount(r)
                                            = popcount(sum) + 2 popcount(carry)

Feeding the words through full adders, one weight level at a time (``ones``, ``twos``, ``fours``, ...,
as in Harley and Seal's popcount and Mula, Kurz and Lemire's AVX2 version), leaves at most two words
per level, so 36 words need 7 popcounts instead of 36. The expression is built with ``Let`` bindings
(every intermediate is used twice; without them the tree would be copied exponentially) and split
into independent chains of at most :data:`CHAIN_TERMS` words: TVM's buffer passes get slow on one
long chain of nested ``Let``s (72 words in one chain: 6 s to compile, in two: 0.8 s; 54 in one: 1 s).

Every operation is element-wise, so the expression vectorises over whatever loop indexes its terms
(the output channels, in :func:`labnas.tvm.kernels.xnor_compute`).
"""

from __future__ import annotations

from tvm import tirx

__all__ = ["carry_save_popcount", "CHAIN_TERMS"]

#: Words per independent full-adder chain: 54 ran 0-5 % faster than 36 (two chains of 50 vs three of 34 at
#: 100 words); one chain of 72 took 6 s to compile against 1 s for 54.
CHAIN_TERMS = 54


def carry_save_popcount(terms: list[tirx.PrimExpr]) -> tirx.PrimExpr:
    """``sum(popcount(t) for t in terms)`` (int64), with full adders in front of the popcounts.

    Args:
        terms: int64 expressions, e.g. ``a[...] ^ w[...]`` for every tap and word of one output.

    Returns:
        One expression equal to the sum of their popcounts, for any bits.
    """
    if not terms:
        raise ValueError("carry_save_popcount needs at least one term")
    chains = -(-len(terms) // CHAIN_TERMS)
    size = -(-len(terms) // chains)  # chains of even length
    total = None
    for start in range(0, len(terms), size):
        part = _chain(terms[start : start + size], prefix=f"cs{start // size}_")
        total = part if total is None else total + part
    return total


def _chain(terms: list[tirx.PrimExpr], prefix: str) -> tirx.PrimExpr:
    """One chain: words pushed into per-level lists; three on a level become a sum there and a carry one level up."""
    bindings: list[tuple[tirx.Var, tirx.PrimExpr]] = []

    def bind(expr: tirx.PrimExpr, name: str) -> tirx.Var:
        var = tirx.Var(f"{prefix}{name}{len(bindings)}", "int64")
        bindings.append((var, expr))
        return var

    levels: list[list[tirx.PrimExpr]] = []

    def push(word: tirx.PrimExpr, level: int) -> None:
        while len(levels) <= level:
            levels.append([])
        levels[level].append(word)
        if len(levels[level]) == 3:
            p, q, r = levels[level]
            half = bind(p ^ q, "h")
            levels[level] = [bind(half ^ r, "s")]
            push(bind((p & q) | (half & r), "c"), level + 1)

    for term in terms:
        push(bind(term, "e"), 0)
    total = None
    for level, words in enumerate(levels):
        for word in words:
            count = tirx.popcount(word)
            count = count << level if level else count
            total = count if total is None else total + count
    for var, value in reversed(bindings):
        total = tirx.Let(var, value, total)
    return total
