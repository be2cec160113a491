"""Float64 passes over all the training points, a chunk at a time beyond CHUNK_POINTS points, so that millions of
points cost float64 temporaries of one chunk, not of all the data. Up to CHUNK_POINTS points each is computed in one
piece, exactly as before streaming existed.

fitquad.theory.passes and fitquad.theory.streamed_optimum stream theirs (evaluation, conditioning, the optimum). Every
module reads the chunk size as `streaming.CHUNK_POINTS` at call time, so that tests can shrink the chunks everywhere at
once. (The model fits its own feature scaling the same way, with its own chunk size: fitquad.core.model.)
"""

from __future__ import annotations

import torch

# Points per chunk: float64 temporaries of at most CHUNK_POINTS × (degree + 1) numbers.
CHUNK_POINTS = 1 << 18


def in_one_piece(x: torch.Tensor) -> bool:
    """Whether a pass over x is one dense computation: at most CHUNK_POINTS points."""
    return len(x) <= CHUNK_POINTS
