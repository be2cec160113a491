"""Float64 statistics of all the training points, a chunk at a time beyond CHUNK_POINTS points, so that millions
of points cost float64 temporaries of one chunk, not of all the data. Up to CHUNK_POINTS points each is computed
in one piece, exactly as before streaming existed.

fitquad.reference streams its passes (least squares, conditioning, evaluation) with the same chunk size; here are
the feature scaling's: the inputs' mean and standard deviation (standardize) and the powers' mean and triangular
factor R (whiten).
"""

from __future__ import annotations

import math

import torch

# Points per chunk: float64 temporaries of at most CHUNK_POINTS × (degree + 1) numbers (≤ 27 MB at degree 12).
CHUNK_POINTS = 1 << 18


def mean_and_std(x: torch.Tensor) -> tuple[float, float]:
    """The mean and the population standard deviation of x, in float64 (two passes when streamed)."""
    if len(x) <= CHUNK_POINTS:
        whole = x.double()
        return whole.mean().item(), whole.std(correction=0).item()
    mean = sum(part.double().sum().item() for part in x.split(CHUNK_POINTS)) / len(x)
    squares = sum((part.double() - mean).square().sum().item() for part in x.split(CHUNK_POINTS))
    return mean, math.sqrt(squares / len(x))


def powers(x: torch.Tensor, shift: float, scale: float, degree: int) -> torch.Tensor:
    """(n, degree) float64 powers z, z², …, z^degree of z = (x − shift)/scale."""
    z = (x.double() - shift) / scale
    return torch.stack([z**k for k in range(1, degree + 1)], dim=-1)


def powers_mean_and_r(x: torch.Tensor, shift: float, scale: float, degree: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean of the powers and the triangular R of the centred powers' QR (centred = Q·R), in float64.

    Streamed, R is built up a chunk at a time (the QR of [R so far; next chunk] has the same R as the QR of all the
    rows so far, up to signs: as stable as one QR of everything), and its rows are signed so that its diagonal is
    positive: the one QR of all the rows fixes those signs from all the rows at once, which a stream cannot
    reproduce, and either sign gives orthonormal features.
    """
    if len(x) <= CHUNK_POINTS:
        whole = powers(x, shift, scale, degree)
        mean = whole.mean(dim=0)
        return mean, torch.linalg.qr(whole - mean).R
    mean = sum(powers(part, shift, scale, degree).sum(dim=0) for part in x.split(CHUNK_POINTS)) / len(x)
    r = torch.zeros(0, degree, dtype=torch.float64)
    for part in x.split(CHUNK_POINTS):
        r = torch.linalg.qr(torch.cat([r, powers(part, shift, scale, degree) - mean]), mode="r").R
    signs = torch.where(r.diagonal() < 0, -1.0, 1.0).to(torch.float64)
    return mean, signs.unsqueeze(-1) * r


def distinct_count(x: torch.Tensor, enough: int) -> int:
    """How many distinct values x holds, counted exactly when fewer than `enough` (the first chunk often settles it
    without sorting all the points)."""
    found = len(torch.unique(x[:CHUNK_POINTS]))
    return found if found >= enough or len(x) <= CHUNK_POINTS else len(torch.unique(x))
