"""The solvers of the closed-form optimum (fitquad.theory.reference) for any number of points, passing over the design
matrix one chunk at a time (theory.passes): least squares by a QR built up chunk by chunk, Huber and SmoothL1 by IRLS
and an exact Newton step, L1 by the simplex method from a few IRLS steps (`l1_vertex`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch

from fitquad.core.model import PolynomialModel
from fitquad.theory.passes import design_chunks, in_one_piece

# IRLS stops when no parameter moves by more than this, relative to the parameters' size.
IRLS_TOLERANCE = 1e-13
IRLS_MAX_ITERATIONS = 500

Weights = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (A, y) of a chunk → each row's weight


def least_squares(
    model: PolynomialModel,
    x: torch.Tensor,
    y: torch.Tensor,
    ridge: float,
    weights: Weights | None = None,
) -> torch.Tensor:
    """argmin_θ Σ wᵢ(aᵢθ − yᵢ)² + ridge·|θ|² over all the points. Points in one piece: least squares on the stacked
    system [√w·A; √ridge·I] (no normal equations). More: R·θ = Qᵀy from a QR built up one chunk at a time, solved
    with the rank threshold the dense solver uses (machine epsilon × rows)."""
    p = model.degree + 1
    if in_one_piece(x):
        a, y_part = next(design_chunks(model, x, y))
        if weights is not None:
            root = weights(a, y_part).sqrt()
            a, y_part = a * root.unsqueeze(1), y_part * root
        if ridge > 0:
            a = torch.cat([a, math.sqrt(ridge) * torch.eye(p, dtype=a.dtype)])
            y_part = torch.cat([y_part, torch.zeros(p, dtype=y_part.dtype)])
        return torch.linalg.lstsq(a, y_part.unsqueeze(1), driver="gelsd").solution.squeeze(1)
    r, z = torch.zeros(0, p, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
    for a, y_part in design_chunks(model, x, y):
        if weights is not None:
            root = weights(a, y_part).sqrt()
            a, y_part = a * root.unsqueeze(1), y_part * root
        q, r = torch.linalg.qr(torch.cat([r, a]))
        z = q.T @ torch.cat([z, y_part])
    rows = len(x)
    if ridge > 0:
        q, r = torch.linalg.qr(torch.cat([r, math.sqrt(ridge) * torch.eye(p, dtype=r.dtype)]))
        z = q.T @ torch.cat([z, torch.zeros(p, dtype=z.dtype)])
    rcond = torch.finfo(torch.float64).eps * max(rows + (p if ridge > 0 else 0), p)
    return torch.linalg.lstsq(r, z.unsqueeze(1), rcond=rcond, driver="gelsd").solution.squeeze(1)


def irls(
    solve: Callable[[Weights | None], torch.Tensor], weights_at: Callable[[torch.Tensor], Weights]
) -> torch.Tensor:
    """Iteratively reweighted least squares from the unweighted fit: solve(weights) is the weighted least-squares
    solution (dense or streamed), weights_at(θ) the weights around θ."""
    theta = solve(None)
    for _ in range(IRLS_MAX_ITERATIONS):
        new_theta = solve(weights_at(theta))
        converged = (new_theta - theta).abs().max() <= IRLS_TOLERANCE * (1 + theta.abs().max())
        theta = new_theta
        if converged:
            break
    return theta


def huber_weights_at(delta: float) -> Callable[[torch.Tensor], Weights]:
    """Huber's IRLS weights around θ: 1 inside the quadratic zone, δ/|r| outside (a majorizer of the loss, so every
    iteration lowers it)."""

    def at(theta: torch.Tensor) -> Weights:
        def weights(a: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            residuals = (a @ theta - y).abs()
            return torch.where(residuals <= delta, 1.0, delta / residuals.clamp_min(1e-300))

        return weights

    return at


def l1_weights_at(floor: float) -> Callable[[torch.Tensor], Weights]:
    """L1's IRLS weights around θ: 1/|r|, with |r| kept above `floor` where a residual reaches 0."""
    return lambda theta: lambda a, y: 1 / (a @ theta - y).abs().clamp_min(floor)


def huber(
    model: PolynomialModel,
    x: torch.Tensor,
    y: torch.Tensor,
    delta: float,
    scale: float,
    weight_decay: float,
) -> torch.Tensor:
    """Minimize mean(huber_δ(r))/scale + wd/2·|θ|² (scale = 1: HuberLoss; scale = β = δ: SmoothL1Loss), as
    reference's dense solver does."""
    n, p = len(x), model.degree + 1
    ridge = n * scale * weight_decay
    theta = irls(lambda weights: least_squares(model, x, y, ridge, weights), huber_weights_at(delta))
    # Newton on the final split: inliers contribute r²/2, outliers δ·|r| (a constant gradient δ·sign(r)).
    gradient, hessian = torch.zeros(p, dtype=torch.float64), torch.zeros(p, p, dtype=torch.float64)
    for a, y_part in design_chunks(model, x, y):
        residuals = a @ theta - y_part
        inside = residuals.abs() <= delta
        gradient += a[inside].T @ residuals[inside] + delta * a[~inside].T @ residuals[~inside].sign()
        hessian += a[inside].T @ a[inside]
    gradient = gradient / (n * scale) + weight_decay * theta
    hessian = hessian / (n * scale) + weight_decay * torch.eye(p, dtype=torch.float64)
    if torch.linalg.matrix_rank(hessian) < p:
        return theta
    polished = theta - torch.linalg.solve(hessian, gradient)
    moved = sum(
        int((((a @ polished - y_part).abs() <= delta) != ((a @ theta - y_part).abs() <= delta)).sum())
        for a, y_part in design_chunks(model, x, y)
    )
    return polished if moved == 0 else theta  # the split held: the step is exact


def l1(model: PolynomialModel, x: torch.Tensor, y: torch.Tensor, weight_decay: float) -> torch.Tensor:
    """Minimize mean|r| + wd/2·|θ|²: without weight decay the exact vertex (`l1_vertex`), with it IRLS (weights 1/|r|),
    as reference's dense solver does."""
    n, p = len(x), model.degree + 1
    floor = 1e-12 * (1 + (y.abs().max().item() if len(y) else 0.0))
    solve = lambda weights: least_squares(model, x, y, n * weight_decay, weights)  # noqa: E731
    if weight_decay > 0 or n < p:
        return irls(solve, l1_weights_at(floor))
    return l1_vertex(solve, lambda: design_chunks(model, x, y), p, floor)


Chunks = Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]  # a fresh pass over (A, y), a chunk at a time
Columns = tuple[torch.Tensor, ...]  # rows kept across chunks, a tensor per column

# L1: IRLS iterations that bring the fit near enough the optimum for its p closest points to start the simplex.
L1_IRLS_ITERATIONS = 4
# The simplex's pivots before giving up (and falling back to IRLS): each lowers Σ|r|, one vertex to the next.
L1_MAX_PIVOTS = 500
# The multipliers may exceed 1 by rounding (sums of n signs, solved by a p × p system).
CERTIFICATE_SLACK = 1e-9
# Breakpoints of the line search kept per chunk (the smallest): the step crosses only a few.
BREAKPOINTS_KEPT = 1 << 17


def l1_vertex(solve: Callable[[Weights | None], torch.Tensor], chunks: Chunks, p: int, floor: float) -> torch.Tensor:
    """The exact minimizer of Σ|aᵢθ − yᵢ|, a linear program whose optimum interpolates p of the points (a vertex).

    IRLS (weights 1/|r|) approaches it only linearly, so a few iterations of it only find a start: the vertex through
    the p points closest to the IRLS fit. From there the simplex method (Barrodale and Roberts' for L1) moves from
    vertex to vertex, two passes a move: the multipliers u of the vertex's points (`multipliers`) prove it optimal
    when every |uⱼ| ≤ 1; otherwise point j with the largest |uⱼ| leaves, and the line search along the edge that
    frees it (`entering`) finds the point that takes its place, at the minimum of Σ|r| along that edge. Should that
    fail (rank-deficient points), IRLS to convergence, as before."""
    weights_at = l1_weights_at(floor)
    theta = solve(None)
    for _ in range(L1_IRLS_ITERATIONS):
        theta = solve(weights_at(theta))
    a_basis, y_basis, basis = _closest_points(chunks, theta, p)
    for _ in range(L1_MAX_PIVOTS):
        if len(basis) < p or torch.linalg.matrix_rank(a_basis) < p:
            break
        vertex = torch.linalg.solve(a_basis, y_basis)
        u = multipliers(chunks, vertex, a_basis, basis)
        leaving = int(u.abs().argmax())
        if u[leaving].abs() <= 1 + CERTIFICATE_SLACK:
            return vertex
        direction = torch.linalg.solve(a_basis, u[leaving].sign() * torch.eye(p, dtype=torch.float64)[leaving])
        point = entering(chunks, vertex, direction, basis, (u[leaving].abs().item() - 1) / 2)
        if point is None:
            break
        a_basis[leaving], y_basis[leaving], basis[leaving] = point
    return irls(solve, weights_at)


def multipliers(chunks: Chunks, vertex: torch.Tensor, a_basis: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """The multipliers u of the vertex through the points `basis`: with g = Σ_{i∉basis} sign(rᵢ)·aᵢ, zero is in the
    subdifferential of Σ|r| iff g + A_Bᵀu = 0 for some u with every |uⱼ| ≤ 1, and A_B square and of full rank makes u
    unique. One pass."""
    g, offset = torch.zeros(len(vertex), dtype=torch.float64), 0
    for a, y_part in chunks():
        # The vertex's own residuals are 0 up to rounding: their part is u.
        g += a.T @ _off_the_basis((a @ vertex - y_part).sign(), basis, offset)
        offset += len(a)
    return torch.linalg.solve(a_basis.T, -g)


def entering(
    chunks: Chunks, vertex: torch.Tensor, direction: torch.Tensor, basis: torch.Tensor, needed: float
) -> tuple[torch.Tensor, torch.Tensor, int] | None:
    """(aᵢ, yᵢ, i) of the point where Σ|r| is least along vertex + t·direction, t > 0: each point off the basis
    has its residual reach 0 at tᵢ = −rᵢ/cᵢ (cᵢ = aᵢ·direction), and crossing it raises the slope by 2|cᵢ|; the
    slope starts at −2·`needed`. One pass, keeping the BREAKPOINTS_KEPT smallest tᵢ; None when no point lies ahead."""
    kept, offset = _no_rows(len(vertex), weighted=True), 0
    for a, y_part in chunks():
        slope = _off_the_basis(a @ direction, basis, offset)
        t = -(a @ vertex - y_part) / slope
        ahead = (slope != 0) & (t >= 0)
        index = ahead.nonzero().squeeze(1) + offset
        kept = _keep_smallest(BREAKPOINTS_KEPT, kept, (t[ahead], a[ahead], y_part[ahead], index, slope[ahead].abs()))
        offset += len(a)
    t, rows, targets, index, weight = kept
    if not len(t):
        return None
    crossed = (weight.cumsum(0) >= needed).nonzero()
    at = int(crossed[0]) if len(crossed) else len(t) - 1  # beyond the kept ones: go as far as they reach
    return rows[at], targets[at], int(index[at])


def _closest_points(chunks: Chunks, theta: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A, y, index) of the `count` points with the smallest |aθ − y|: each chunk's closest, merged."""
    kept, offset = _no_rows(len(theta)), 0
    for a, y_part in chunks():
        index = torch.arange(offset, offset + len(a))
        kept = _keep_smallest(count, kept, ((a @ theta - y_part).abs(), a, y_part, index))
        offset += len(a)
    _, rows, targets, index = kept
    return rows, targets, index


def _off_the_basis(values: torch.Tensor, basis: torch.Tensor, offset: int) -> torch.Tensor:
    """`values` of the chunk starting at point `offset`, with those of the basis's points set to 0."""
    mine = (basis >= offset) & (basis < offset + len(values))
    values[basis[mine] - offset] = 0.0
    return values


def _no_rows(p: int, weighted: bool = False) -> Columns:
    """Empty (key, A rows, y, index[, weight]) columns, for _keep_smallest to fill."""
    columns = (torch.zeros(0, dtype=torch.float64), torch.zeros(0, p, dtype=torch.float64),
               torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.long))  # fmt: skip
    return (*columns, torch.zeros(0, dtype=torch.float64)) if weighted else columns


def _keep_smallest(count: int, kept: Columns, new: Columns) -> Columns:
    """The `count` rows of kept and new together with the smallest first column (the key), every column alike."""
    merged = [torch.cat(pair) for pair in zip(kept, new, strict=True)]
    order = merged[0].argsort(stable=True)[:count]
    return tuple(column[order] for column in merged)
