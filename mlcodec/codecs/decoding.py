"""Decoding a batch of bitstreams so that one bad sample is named instead of failing the batch.

Loaders and ``mlcodec verify`` decode bitstreams in batches (the hyper-synthesis is batched); a
corrupt or foreign sample makes the whole call raise. :func:`decode_each` retries such a batch item
by item, so the samples at fault are reported by name and the others still decode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from mlcodec.bitstream import BitstreamError

T = TypeVar("T")
R = TypeVar("R")


def decode_each(decode: Callable[[list[T]], Sequence[R]], items: list[T],
                errors: tuple[type[Exception], ...] = (BitstreamError, ValueError),
                ) -> tuple[list[R | Exception], Exception | None]:
    """``decode(items)`` together, as a loader batches them; where that raises one of ``errors``,
    each item on its own, so that the items at fault are named. Returns each item's result or its
    error, and the batch's error (None where the batch decoded: then no item was retried)."""
    try:
        return list(decode(items)), None
    except errors as e:
        if len(items) == 1:
            return [e], e
        batch_error = e
    out: list[R | Exception] = []
    for item in items:
        try:
            out.append(decode([item])[0])
        except errors as e:
            out.append(e)
    return out, batch_error
