"""Float64 statistics of all the training points, a chunk at a time beyond CHUNK_POINTS points, so that millions
of points cost float64 temporaries of one chunk, not of all the data. Up to CHUNK_POINTS points each is computed
in one piece, exactly as before streaming existed.

fitquad.theory.passes and fitquad.theory.streamed_optimum stream theirs (evaluation, conditioning, the optimum) with the same
chunk size; here are the feature scaling's: the inputs' mean and standard deviation (standardize) and the powers'
mean and triangular factor R (whiten). Under DDP each process streams its own shard and the results are combined
across the processes (fitquad.theory.shards). Every module reads the chunk size as `streaming.CHUNK_POINTS` at call time,
so that tests can shrink the chunks everywhere at once.
"""

from __future__ import annotations

import math

import torch

from fitquad.theory.shards import WHOLE, Shards

# Points per chunk: float64 temporaries of at most CHUNK_POINTS × (degree + 1) numbers (≤ 27 MB at degree 12).
CHUNK_POINTS = 1 << 18


def in_one_piece(x: torch.Tensor, shards: Shards) -> bool:
    """Whether a pass over x is one dense computation: one process holding at most CHUNK_POINTS points."""
    return shards.count == 1 and len(x) <= CHUNK_POINTS


def mean_and_std(x: torch.Tensor, shards: Shards = WHOLE) -> tuple[float, float]:
    """The mean and the population standard deviation of x (all the shards'), in float64 (two passes when
    streamed)."""
    if in_one_piece(x, shards):
        whole = x.double()
        return whole.mean().item(), whole.std(correction=0).item()
    n = shards.sum(len(x))
    mean = shards.sum(sum(part.double().sum().item() for part in x.split(CHUNK_POINTS))) / n
    squares = shards.sum(sum((part.double() - mean).square().sum().item() for part in x.split(CHUNK_POINTS)))
    return mean, math.sqrt(squares / n)


def powers(x: torch.Tensor, shift: float, scale: float, degree: int) -> torch.Tensor:
    """(n, degree) float64 powers z, z², …, z^degree of z = (x − shift)/scale."""
    z = (x.double() - shift) / scale
    return torch.stack([z**k for k in range(1, degree + 1)], dim=-1)


def powers_mean_and_r(
    x: torch.Tensor, shift: float, scale: float, degree: int, shards: Shards = WHOLE
) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean of the powers and the triangular R of the centred powers' QR (centred = Q·R), in float64, over all
    the shards' points, with R's diagonal positive.

    Streamed, R is built up a chunk at a time (the QR of [R so far; next chunk] has the same R as the QR of all the
    rows so far, up to signs: as stable as one QR of everything), then the shards' Rs are stacked and factored once
    more. A QR fixes R only up to the sign of each row, and the signs LAPACK picks depend on how the rows were
    split; signing every row so that the diagonal is positive (the unique R of a full-rank matrix) gives the same
    whitened features, and so the same start from model.init_seed, in one piece, streamed or under DDP.
    """
    if in_one_piece(x, shards):
        whole = powers(x, shift, scale, degree)
        mean = whole.mean(dim=0)
        return mean, positive_diagonal(torch.linalg.qr(whole - mean).R)
    sums = torch.zeros(degree, dtype=torch.float64)
    for part in x.split(CHUNK_POINTS):
        sums += powers(part, shift, scale, degree).sum(dim=0)
    mean = shards.sum(sums) / shards.sum(len(x))
    r = torch.zeros(0, degree, dtype=torch.float64)
    for part in x.split(CHUNK_POINTS):
        r = torch.linalg.qr(torch.cat([r, powers(part, shift, scale, degree) - mean]), mode="r").R
    if shards.count > 1:
        r = torch.linalg.qr(torch.cat(shards.gather(r)), mode="r").R
    return mean, positive_diagonal(r)


def positive_diagonal(r: torch.Tensor) -> torch.Tensor:
    """R with each row's sign flipped where its diagonal entry is negative."""
    signs = torch.where(r.diagonal() < 0, -1.0, 1.0).to(r.dtype)
    return signs.unsqueeze(-1) * r


def distinct_count(x: torch.Tensor, enough: int, shards: Shards = WHOLE) -> int:
    """How many distinct values x (all the shards') holds, counted exactly when fewer than `enough` (the first chunk
    often settles it without sorting all the points)."""
    found = torch.unique(x[:CHUNK_POINTS])
    if len(found) < enough and len(x) > CHUNK_POINTS:
        found = torch.unique(x)
    if shards.count == 1:
        return len(found)
    # Each shard's first `enough` distinct values: their union reaches `enough` exactly when all the points' does.
    return len(torch.unique(torch.cat(shards.gather(found[:enough].cpu()))))
