r"""The polar factor :math:`\mathrm{Ortho}(G) = UV^\top` and its derivatives.

For :math:`G = U S V^\top` (thin SVD, :math:`r = \min(m, n)` singular values, all positive) the polar
factor is :math:`UV^\top`: the matrix with orthonormal rows (``m <= n``) or columns (``m > n``) closest
to :math:`G`. It is what Muon's Newton–Schulz iteration approximates.

Routes. :func:`polar_factor` computes :math:`(GG^\top)^{-1/2}G` from an eigendecomposition of the smaller
Gram matrix, which is about three times faster than an SVD on a ``(2000, 64, 128)`` batch
(``benchmarks/polar_throughput.py``). Forming the Gram matrix squares the condition number, so its
forward error grows like :math:`u\,\kappa^2`; matrices whose condition number exceeds
:func:`gram_max_condition` of their dtype (about 820 in float64, 6 in float32) are therefore computed
through the SVD, whose error grows like :math:`u\,\kappa`.

Rank. A rank-deficient :math:`G` has no unique polar factor. The functions here raise ``ValueError``
then, unless the caller passes ``pinv=True``: the Moore–Penrose convention maps zero singular values to
zero and returns the partial isometry :math:`U_r V_r^\top`.

Large batches. The batched decompositions (``eigh``, ``eigvalsh``, ``svd``) go to the backend in chunks
of at most :data:`DECOMPOSITION_CHUNK` matrices (:func:`batched_decomposition`). On CUDA (torch 2.11,
cuSOLVER 13, H100) the batched symmetric eigensolver reserves about 0.5 MiB of workspace per matrix even
for 4 x 4 matrices: 4.2 GiB for 8192 of them, 65 GiB for 128 000 (which failed with an internal error).
In chunks of 2048 the workspace stays near 1 GiB and the time per matrix is unchanged. The results do
not depend on the chunking.
"""
from __future__ import annotations

import math

import torch

from . import checks

def gram_max_condition(dtype: torch.dtype) -> float:
    r"""Largest condition number for which :func:`polar_factor` keeps the Gram-matrix route, for ``dtype``.

    The Gram route's forward error grows like :math:`u\kappa^2`, the SVD's like :math:`u\kappa`. The route
    is kept while :math:`\kappa \le 0.1\,u^{-1/4}`, so its error stays below :math:`10^{-2}u^{1/2}`:
    about 820 in float64 (error :math:`\lesssim 10^{-10}`) and 6 in float32 (error :math:`\lesssim 3\cdot10^{-6}`).
    """
    checks.floating_dtype(dtype)
    return 0.1 * torch.finfo(dtype).eps ** -0.25


GRAM_MAX_CONDITION = gram_max_condition(torch.float64)
""":func:`gram_max_condition` of float64 (about 820)."""


DECOMPOSITION_CHUNK = 2048
"""Most matrices handed to one batched ``torch.linalg`` decomposition call (see the module docstring)."""


def batched_decomposition(fn, A: torch.Tensor, chunk: int | None = None):
    """``fn(A)`` for a batched decomposition ``fn`` (``torch.linalg.eigh``, ``eigvalsh``, ``svd``, ...),
    computed over the flattened batch of ``A`` (``(..., m, n)``) in chunks of at most ``chunk`` matrices
    (default :data:`DECOMPOSITION_CHUNK`) and reassembled; a tuple result comes back as a plain tuple, entry by entry.

    Each matrix is decomposed on its own, so the result equals ``fn(A)``: only the backend's workspace,
    which cuSOLVER sizes for the whole batch, is bounded.
    """
    checks.function(fn, "fn")
    checks.matrix(A, "A")
    checks.exact_dtype(A, "A")
    chunk = DECOMPOSITION_CHUNK if chunk is None else checks.count(chunk, "chunk")
    batch = A.shape[:-2]
    count = math.prod(batch)
    if count <= chunk:
        return fn(A)
    flat = A.reshape(count, *A.shape[-2:])
    parts = [fn(flat[i:i + chunk]) for i in range(0, count, chunk)]

    def join(pieces):
        return torch.cat(pieces).reshape(*batch, *pieces[0].shape[1:])

    if isinstance(parts[0], tuple):
        return tuple(join(list(p)) for p in zip(*parts))
    return join(parts)


def _rtol(A: torch.Tensor, rtol: float | None) -> float:
    if rtol is None:
        return max(A.shape[-2:]) * torch.finfo(A.dtype).eps
    return checks.open_unit(rtol, "rtol")


def _rank_error(s_min: torch.Tensor, s_max: torch.Tensor, tol: float) -> ValueError:
    worst = (s_min / s_max.clamp_min(torch.finfo(s_max.dtype).tiny)).min().item()
    return ValueError(
        f"G is rank-deficient: smallest/largest singular value = {worst:.3g} <= rtol = {tol:.3g}, so its "
        "polar factor is not unique; pass pinv=True for the Moore-Penrose convention U_r V_r^T"
    )


def _gram_tol(A: torch.Tensor, tol: float) -> float:
    """Eigenvalue tolerance of a Gram matrix for singular-value tolerance ``tol``: ``tol**2``, but never
    below the rounding floor ``size * eps`` of the eigenvalues (the Gram route cannot see singular values
    below about ``sqrt(eps)`` of the largest)."""
    return max(tol**2, max(A.shape[-2:]) * torch.finfo(A.dtype).eps)


def _normalised(A: torch.Tensor) -> torch.Tensor:
    """``A`` divided by its largest absolute entry (per matrix): Ortho is scale-invariant, and the Gram
    matrix of a matrix of entries near 1e155 (or 1e-170) would overflow (underflow) otherwise."""
    scale = A.abs().amax(dim=(-2, -1), keepdim=True)
    return A / torch.where(scale > 0, scale, torch.ones_like(scale))


def _polar_svd(A: torch.Tensor, pinv: bool, tol: float) -> torch.Tensor:
    U, s, Vh = batched_decomposition(lambda X: torch.linalg.svd(X, full_matrices=False), A)
    keep = s > tol * s[..., :1]
    if not pinv and not bool(keep.all()):
        raise _rank_error(s[..., -1], s[..., 0], tol)
    return (U * keep.to(A.dtype).unsqueeze(-2)) @ Vh


def _inv_sqrt_eigh(H: torch.Tensor, pinv: bool, tol: float, what: str = "G"):
    """Return (H^{-1/2}, eigenvalues) of symmetric PSD H; eigenvalues <= tol * max are treated as zero.

    ``tol`` is relative to the largest eigenvalue. For a Gram matrix ``H = G G^T`` pass the square of the
    singular-value tolerance; ``what`` names the matrix in the rank error (``"G"`` or ``"H"``).
    """
    w, Q = batched_decomposition(torch.linalg.eigh, H)
    top = w[..., -1:].clamp_min(torch.finfo(H.dtype).tiny)
    keep = w > tol * top
    if not pinv and not bool(keep.all()):
        if what == "H":
            worst = (w[..., 0:1] / top).min().item()
            raise ValueError(f"H is singular: smallest/largest eigenvalue = {worst:.3g} <= rtol = {tol:.3g}; "
                             "pass pinv=True for the Moore-Penrose inverse square root")
        raise _rank_error(w[..., 0].clamp_min(0).sqrt(), w[..., -1].sqrt(), tol ** 0.5)
    inv_root = torch.where(keep, w.clamp_min(torch.finfo(H.dtype).tiny).rsqrt(), torch.zeros_like(w))
    return (Q * inv_root.unsqueeze(-2)) @ Q.mT, w


def inv_sqrt_psd(H: torch.Tensor, pinv: bool = False, rtol: float | None = None) -> torch.Tensor:
    r"""The principal inverse square root :math:`H^{-1/2}` of symmetric positive-definite ``H``.

    Computed as :math:`Q\,\Lambda^{-1/2}Q^\top` from ``torch.linalg.eigh``; batched over leading
    dimensions. A singular ``H`` (an eigenvalue at most ``rtol`` times the largest) raises
    ``ValueError`` unless ``pinv=True``, which inverts only the positive eigenvalues (the Moore–Penrose
    inverse square root). An indefinite ``H`` (an eigenvalue below ``-rtol`` times the largest) is
    always an error: it has no real square root. ``rtol`` (in (0, 1)) defaults to ``size * eps``.
    """
    checks.matrix(H, "H")
    checks.exact_dtype(H, "H")
    checks.flag(pinv, "pinv")
    if H.shape[-1] != H.shape[-2]:
        raise ValueError(f"H must be square, got shape {tuple(H.shape)}")
    if not torch.allclose(H, H.mT, rtol=1e-10, atol=1e-12 * float(H.abs().max())):
        raise ValueError("H must be symmetric")
    tol = _rtol(H, rtol)
    w = batched_decomposition(torch.linalg.eigvalsh, H)
    if bool((w[..., 0] < -tol * w[..., -1].abs().clamp_min(torch.finfo(H.dtype).tiny)).any()):
        raise ValueError(f"H must be positive semi-definite; its smallest eigenvalue is {w[..., 0].min().item():.3g}")
    return _inv_sqrt_eigh(H, pinv, tol, what="H")[0]


def preconditioned(G: torch.Tensor, pinv: bool = False, rtol: float | None = None) -> torch.Tensor:
    r""":math:`H^{-1/2}G` with :math:`H = GG^\top` (claim 000-C1's left-hand side), batched.

    ``H`` is singular whenever ``G`` has fewer than ``m`` independent rows (in particular whenever
    ``m > n``); then this raises ``ValueError`` unless ``pinv=True``. ``rtol`` (in (0, 1)) is relative to
    the largest singular value of ``G`` (default ``max(m, n) * eps``); the Gram matrix squares it, so it
    cannot resolve singular values below about ``sqrt(eps)`` times the largest.
    """
    checks.matrix(G, "G")
    checks.exact_dtype(G, "G")
    checks.flag(pinv, "pinv")
    A = _normalised(G)
    inv_root, _ = _inv_sqrt_eigh(A @ A.mT, pinv, _gram_tol(A, _rtol(G, rtol)))
    return inv_root @ A


def polar_factor(G: torch.Tensor, method: str = "auto", pinv: bool = False, rtol: float | None = None) -> torch.Tensor:
    r"""The polar factor :math:`\mathrm{Ortho}(G) = UV^\top` of every ``m x n`` matrix in a batch.

    Args:
        G: tensor of shape ``(..., m, n)``, finite, float32 or float64.
        method: ``"auto"`` (Gram route where it is accurate, SVD elsewhere), ``"gram"`` or ``"svd"``.
            ``auto`` sends to the SVD every matrix whose condition number exceeds
            :func:`gram_max_condition` of its dtype, or whose Gram matrix is near-singular at ``rtol``.
        pinv: accept rank-deficient matrices and return :math:`U_rV_r^\top` (zero singular values
            mapped to zero) instead of raising.
        rtol: in (0, 1); singular values at most ``rtol`` times the largest count as zero (on every
            route); default ``max(m, n) * eps``.
    """
    checks.matrix(G, "G")
    checks.exact_dtype(G, "G")
    checks.choice(method, "method", ("auto", "gram", "svd"))
    checks.flag(pinv, "pinv")
    checks.allocation(G.shape, G.dtype, "G (the factor and its workspace)", copies=6)
    tol = _rtol(G, rtol)
    if method == "svd":
        return _polar_svd(G, pinv, tol)
    wide = G.shape[-2] <= G.shape[-1]
    A = _normalised(G if wide else G.mT)
    gram = A @ A.mT
    if method == "gram":
        inv_root, _ = _inv_sqrt_eigh(gram, pinv, _gram_tol(A, tol))
        out = inv_root @ A
        return out if wide else out.mT
    # auto: the Gram route only where it is well conditioned; the SVD (with the caller's pinv and rtol)
    # for every matrix whose smallest Gram eigenvalue is below max(1/kappa_max^2, rtol^2) of the largest.
    floor = max(gram_max_condition(G.dtype) ** -2, tol**2)
    w = batched_decomposition(torch.linalg.eigvalsh, gram)
    ill = w[..., 0] <= floor * w[..., -1]
    out = torch.empty_like(A)
    if bool((~ill).any()):
        inv_root, _ = _inv_sqrt_eigh(gram[~ill], True, floor)
        out[~ill] = inv_root @ A[~ill]
    if bool(ill.any()):
        out[ill] = _polar_svd(A[ill], pinv, tol)
    return out if wide else out.mT


def newton_schulz(G: torch.Tensor, steps: int = 5, dtype: torch.dtype | None = None) -> torch.Tensor:
    r"""Muon's quintic Newton–Schulz approximation of :math:`\mathrm{Ortho}(G)`, batched.

    ``X <- a X + (b A + c A^2) X`` with ``A = X X^T``, ``(a, b, c) = (3.4445, -4.7750, 2.0315)``, after
    scaling ``G`` to unit Frobenius norm — computed by :func:`gradnoise.muon.newton_schulz`, which fuses
    the products exactly as ``torch.optim.Muon``'s helper does, so that in ``dtype=torch.bfloat16`` the
    result equals torch's bit for bit. On singular values it applies the odd polynomial
    :math:`p(x) = ax + bx^3 + cx^5` five times to :math:`\sigma_i/\|G\|_F`; for
    :math:`\sigma_i/\|G\|_F \ge 1.5\cdot10^{-3}` they land in :math:`[0.68, 1.20]`, not at 1 (see the
    chapter on ``torch.optim.Muon``). ``dtype`` (default: ``G``'s) sets the precision of the iteration;
    the result is returned in ``G``'s dtype.
    """
    from . import muon

    checks.matrix(G, "G")
    steps = checks.count(steps, "steps", maximum=100)
    if dtype is not None:
        checks.floating_dtype(dtype)
    return muon.newton_schulz(G, steps, dtype=dtype or G.dtype, exact=True).to(G.dtype)


def _rotated_frame(G: torch.Tensor):
    """Full SVD of G made wide: returns (U, s, V_full, transposed)."""
    checks.exact_dtype(G, "G")
    transposed = G.shape[-2] > G.shape[-1]
    A = G.mT if transposed else G
    U, s, Vh = batched_decomposition(lambda X: torch.linalg.svd(X, full_matrices=True), A)
    if not bool((s[..., -1] > _rtol(A, None) * s[..., 0]).all()):
        raise _rank_error(s[..., -1], s[..., 0], _rtol(A, None))
    return U, s, Vh.mT, transposed


def polar_derivative(G: torch.Tensor, E: torch.Tensor) -> torch.Tensor:
    r"""First-order term :math:`L_1(E) = \frac{d}{dt}\mathrm{Ortho}(G + tE)\big|_{t=0}`, batched.

    In the frame of the SVD (``m <= n``; a tall ``G`` is handled by transposition), write
    :math:`U^\top E V = [X\ Y]` with ``X`` square. Then
    :math:`L_1(E) = U\,[\,\Omega\ \ S^{-1}Y\,]\,V^\top` with
    :math:`\Omega_{ij} = (X_{ij} - X_{ji})/(s_i + s_j)`. ``G`` must have full rank.
    """
    checks.matrix(G, "G")
    checks.matrix(E, "E")
    if E.shape[-2:] != G.shape[-2:]:
        raise ValueError(f"E has matrix shape {tuple(E.shape[-2:])} but G has {tuple(G.shape[-2:])}")
    checks.same_kind(G, E, "G", "E")
    checks.batch_broadcast(G, E, "G", "E")
    U, s, V, transposed = _rotated_frame(G)
    D = E.mT if transposed else E
    m = s.shape[-1]
    R = U.mT @ D @ V
    X, Y = R[..., :m], R[..., m:]
    omega = (X - X.mT) / (s.unsqueeze(-1) + s.unsqueeze(-2))
    out = U @ torch.cat([omega, Y / s.unsqueeze(-1)], dim=-1) @ V.mT
    return out.mT if transposed else out


def polar_second_order(G: torch.Tensor, h: float = 1e-4) -> torch.Tensor:
    r"""The second-order term of :math:`\mathrm{Ortho}(G + E)` as a tensor ``B`` of shape ``(d, d, d)``, ``d = m n``.

    :math:`Q_2(E)_r = \sum_{p,q} B_{rpq} E_p E_q` (entries of ``E`` and of the result flattened in row-major
    order), so that :math:`\mathrm{Ortho}(G+E) = \mathrm{Ortho}(G) + L_1(E) + Q_2(E) + O(\|E\|^3)`.
    Computed by central differences of :func:`polar_derivative` with step ``h`` (accurate to about
    ``h**2``); ``B`` is symmetric in its last two indices. For noise with covariance ``C`` on the entries,
    :math:`\mathbb E\,Q_2(E) = \sum_{pq} B_{\cdot pq} C_{pq}`: with ``C = var * I`` this is
    :func:`polar_bias_isotropic`. A single matrix ``G`` (no batch).
    """
    checks.matrix(G, "G")
    if G.ndim != 2:
        raise ValueError(f"G must be a single matrix, got shape {tuple(G.shape)}")
    h = checks.positive_real(h, "h")
    d = G.numel()
    checks.allocation((d, d, d, *G.shape), G.dtype, "G (a d^3 tensor of second derivatives; use polar_bias for large G)")
    basis = torch.eye(d, dtype=G.dtype, device=G.device).reshape(d, *G.shape)
    step, direction = basis[None, :], basis[:, None].expand(d, d, *G.shape)  # [p, q]: L_1 along e_p, moved along e_q
    D = (polar_derivative(G + h * step, direction) - polar_derivative(G - h * step, direction)) / (4 * h)
    return D.reshape(d, d, d).permute(2, 0, 1)


def laplacian(f, X: torch.Tensor, h: float) -> torch.Tensor:
    r"""The Laplacian over the entries of ``X``, :math:`\sum_p \partial^2 f/\partial X_p^2`, by central differences.

    :math:`\sum_p [f(X + h e_p) + f(X - h e_p) - 2 f(X)]/h^2` over the :math:`mn` entries of ``X`` of shape
    ``(..., m, n)``; ``f`` maps a batch ``(..., m, n)`` to ``(..., *out)`` (a number or a matrix per input)
    and is called on a batch of the :math:`mn` shifted copies at once. The truncation error is
    :math:`\tfrac{h^2}{12}\sum_p \partial^4 f/\partial X_p^4`; the rounding error grows like
    :math:`u\,|f|/h^2`. Nesting gives :math:`\Delta^2`: ``laplacian(lambda Y: laplacian(f, Y, h), X, h)``.
    The heat-flow form of the bias expansion (:math:`b_2 = \tfrac{\varepsilon^4}4\Delta b_1`, ...) is
    where the book needs it.
    """
    checks.matrix(X, "X")
    checks.exact_dtype(X, "X")
    h = checks.positive_real(h, "h")
    if not callable(f):
        raise ValueError(f"f must be a function of a batch of matrices, got {type(f).__name__}")
    m, n = X.shape[-2:]
    checks.allocation((*X.shape[:-2], m * n, m, n), X.dtype, "X (one shifted copy per entry)")
    e = h * torch.eye(m * n, dtype=X.dtype, device=X.device).reshape(m * n, m, n)
    centre = f(X)
    out = centre.ndim - (X.ndim - 2)
    if out < 0:
        raise ValueError(f"f must keep the batch dimensions {tuple(X.shape[:-2])}, got shape {tuple(centre.shape)}")
    Xe = X.unsqueeze(-3)
    total = (f(Xe + e) + f(Xe - e)).sum(-(out + 1))
    return (total - 2 * m * n * centre) / h**2


def _isotropic_terms(G: torch.Tensor, var: float):
    checks.matrix(G, "G")
    var = checks.positive_real(var, "var")
    U, s, V, transposed = _rotated_frame(G)
    m, n = s.shape[-1], V.shape[-1]
    pair = 1.0 / (s.unsqueeze(-1) + s.unsqueeze(-2)) ** 2
    pair = pair - torch.diag_embed(torch.diagonal(pair, dim1=-2, dim2=-1))
    beta = -var * (pair.sum(-1) + (n - m) / (2 * s**2))
    return U, beta, V[..., :m], transposed


def polar_bias_isotropic(G: torch.Tensor, var: float) -> torch.Tensor:
    r"""The bias coefficient ``b`` in :math:`\mathbb E\,\mathrm{Ortho}(G + E_n) = \mathrm{Ortho}(G) + b/n + O(n^{-2})`.

    For per-token noise with independent entries of variance ``var`` (isotropic covariance
    ``var * I``), :math:`b = U\,\mathrm{diag}(\beta)\,V^\top` with
    :math:`\beta_i = -\mathrm{var}\,\big[\sum_{j\ne i}(s_i+s_j)^{-2} + |n-m|/(2s_i^2)\big]`, where
    ``m, n`` are the matrix dimensions (derived in the chapter on Richardson extrapolation).
    """
    U, beta, V, transposed = _isotropic_terms(G, var)
    out = (U * beta.unsqueeze(-2)) @ V.mT
    return out.mT if transposed else out


def polar_linear_variance_isotropic(G: torch.Tensor, var: float) -> torch.Tensor:
    r"""Per-token total variance :math:`\sigma_L^2 = \mathbb E\|L_1(\delta)\|_F^2` of the first-order term.

    For isotropic per-token noise of entry variance ``var`` this is
    :math:`\mathrm{var}\,[\sum_{i\ne j} 2/(s_i+s_j)^2 + |n-m|\sum_i s_i^{-2}]`, which equals
    :math:`-2\langle \mathrm{Ortho}(G), b\rangle` because :math:`\|\mathrm{Ortho}\|_F^2` is constant.
    So :math:`\mathrm{tr}\,\mathrm{Cov}\,\mathrm{Ortho}(G+E_n) = \sigma_L^2/n + O(n^{-2})`.
    """
    _, beta, _, _ = _isotropic_terms(G, var)
    return -2.0 * beta.sum(-1)


def _wide_frame(G: torch.Tensor):
    """``(U, s, V_full, transposed)`` of a full-rank ``G`` made wide (``m <= n``), for the expansions below."""
    return _rotated_frame(G)


def _expansion_terms(U, s, V, E: torch.Tensor):
    r"""``(L_1, Q_2)`` in the rotated frame for perturbations ``E`` already made wide, batched over ``E``.

    With :math:`U^\top E V = [X\ Y]`, :math:`A(t) = [S + tX,\ tY]` and
    :math:`M(t) = AA^\top = S^2 + tK_1 + t^2K_2`, :math:`K_1 = SX^\top + XS`, :math:`K_2 = XX^\top + YY^\top`,
    the Daleckii–Krein expansion of :math:`f(M) = M^{-1/2}` around the diagonal :math:`S^2` gives
    :math:`f(M) = S^{-1} + t\,F_1\circ K_1 + t^2\,[F_1\circ K_2 + \sum_k F_{2,ikj}K_{1,ik}K_{1,kj}]`, with the
    divided differences :math:`F_{1,ij} = -1/(s_is_j(s_i+s_j))` and
    :math:`F_{2,ikj} = (s_i+s_j+s_k)/(s_is_js_k(s_i+s_j)(s_i+s_k)(s_j+s_k))`; then
    :math:`\mathrm{Ortho}(A) = f(M)A`.
    """
    m = s.shape[-1]
    R = U.mT @ E @ V
    X, Y = R[..., :m], R[..., m:]
    S = torch.diag_embed(s)
    si, sj = s.unsqueeze(-1), s.unsqueeze(-2)
    F1 = -1.0 / (si * sj * (si + sj))
    a, b, c = s[..., :, None, None], s[..., None, :, None], s[..., None, None, :]  # i, k, j
    F2 = (a + b + c) / (a * b * c * (a + c) * (a + b) * (b + c))
    K1 = S @ X.mT + X @ S
    K2 = X @ X.mT + Y @ Y.mT
    T2 = torch.einsum("...ikj,...ik,...kj->...ij", F2, K1, K1)
    A0 = torch.cat([S, S.new_zeros(*S.shape[:-1], Y.shape[-1])], dim=-1)  # [S 0], the frame's G
    D1 = F1 * K1
    L1 = D1 @ A0 + R / s.unsqueeze(-1)
    Q2 = (F1 * K2 + T2) @ A0 + D1 @ R
    return L1, Q2


def _back(U, V, X, transposed):
    out = U @ X @ V.mT
    return out.mT if transposed else out


def polar_expansion(G: torch.Tensor, E: torch.Tensor):
    r"""The first- and second-order terms :math:`(L_1(E), Q_2(E))` of :math:`\mathrm{Ortho}(G + E)`, exactly.

    :math:`\mathrm{Ortho}(G + tE) = \mathrm{Ortho}(G) + t\,L_1(E) + t^2\,Q_2(E) + O(t^3)`. ``G`` is one
    full-rank ``m x n`` matrix (any shape); ``E`` is ``(..., m, n)``, batched. Closed form in the singular
    frame of ``G`` (Daleckii–Krein divided differences of :math:`x^{-1/2}`; see ``_expansion_terms``),
    checked in the unit tests against :func:`polar_derivative` and finite differences of
    :func:`polar_factor`.
    """
    checks.matrix(G, "G")
    checks.matrix(E, "E")
    if G.ndim != 2:
        raise ValueError(f"G must be a single matrix, got shape {tuple(G.shape)}")
    checks.same_kind(G, E, "G", "E")
    if E.shape[-2:] != G.shape:
        raise ValueError(f"E has matrix shape {tuple(E.shape[-2:])} but G has {tuple(G.shape)}")
    U, s, V, transposed = _wide_frame(G)
    D = E.mT if transposed else E
    L1, Q2 = _expansion_terms(U, s, V, D)
    return _back(U, V, L1, transposed), _back(U, V, Q2, transposed)


def _factors(G: torch.Tensor, cov, factors) -> torch.Tensor:
    if (cov is None) == (factors is None):
        raise ValueError("give exactly one of cov (an mn x mn covariance) and factors (K x m x n)")
    m, n = G.shape[-2:]
    if factors is not None:
        checks.matrix(factors, "factors", min_ndim=3)
        if factors.ndim != 3 or factors.shape[-2:] != (m, n):
            raise ValueError(f"factors must have shape (K, {m}, {n}), got {tuple(factors.shape)}")
        checks.same_kind(G, factors, "G", "factors")
        return factors
    checks.matrix(cov, "cov")
    if cov.shape != (m * n, m * n):
        raise ValueError(f"cov must be ({m * n}, {m * n}) for G of shape {(m, n)}, got {tuple(cov.shape)}")
    checks.same_kind(G, cov, "G", "cov")
    if not torch.allclose(cov, cov.mT, rtol=1e-10, atol=1e-12 * float(cov.abs().max())):
        raise ValueError("cov must be symmetric")
    w, Q = torch.linalg.eigh(cov)
    if float(w[0]) < -1e-10 * float(w[-1].abs()):
        raise ValueError(f"cov must be positive semi-definite; smallest eigenvalue {float(w[0]):.3g}")
    return (Q * w.clamp_min(0).sqrt()).mT.reshape(m * n, m, n)


def _factor_parts(G, cov, factors, chunk):
    """The frame of ``G`` and the covariance factors made wide, in chunks of ``chunk``."""
    checks.matrix(G, "G")
    if G.ndim != 2:
        raise ValueError(f"G must be a single matrix, got shape {tuple(G.shape)}")
    F = _factors(G, cov, factors)
    chunk = checks.positive_int(chunk, "chunk")
    U, s, V, transposed = _wide_frame(G)
    return U, s, V, transposed, [part.mT if transposed else part for part in F.split(chunk)]


def polar_bias(G: torch.Tensor, cov: torch.Tensor | None = None, factors: torch.Tensor | None = None,
               chunk: int = 2048) -> torch.Tensor:
    r"""The bias coefficient :math:`b(\Sigma)` for a general per-token covariance, in closed form.

    :math:`\mathbb E\,\mathrm{Ortho}(G + E_n) = \mathrm{Ortho}(G) + b/n + O(n^{-2})` where :math:`E_n` is
    the mean of ``n`` i.i.d. per-token noises with covariance :math:`\Sigma` on the row-major entries.
    Because :math:`Q_2` is a quadratic form, :math:`b = \mathbb E\,Q_2(\delta) = \sum_k Q_2(F_k)` for any
    factorisation :math:`\Sigma = \sum_k \mathrm{vec}(F_k)\mathrm{vec}(F_k)^\top`. Give either ``cov``
    (``mn x mn``; factorised by ``eigh``) or ``factors`` (``K x m x n``: e.g. per-example deviations
    :math:`(g_x - \bar g)/\sqrt N` for the covariance of a finite data set). With
    :math:`\Sigma = \mathrm{var}\,I` this is :func:`polar_bias_isotropic`.
    """
    U, s, V, transposed, parts = _factor_parts(G, cov, factors, chunk)
    total = sum(_expansion_terms(U, s, V, part)[1].sum(0) for part in parts)
    return _back(U, V, total, transposed)


def polar_linear_variance(G: torch.Tensor, cov: torch.Tensor | None = None, factors: torch.Tensor | None = None,
                          chunk: int = 2048) -> float:
    r"""Per-token total variance :math:`\sigma_L^2 = \mathbb E\|L_1(\delta)\|_F^2` for a general covariance.

    :math:`\sum_k \|L_1(F_k)\|_F^2` over a factorisation of :math:`\Sigma` (see :func:`polar_bias`), so that
    :math:`\mathrm{tr}\,\mathrm{Cov}\,\mathrm{Ortho}(G + E_n) = \sigma_L^2/n + O(n^{-2})`. Equals
    :math:`-2\langle\mathrm{Ortho}(G), b(\Sigma)\rangle`.
    """
    U, s, V, transposed, parts = _factor_parts(G, cov, factors, chunk)
    return sum(float((_expansion_terms(U, s, V, part)[0] ** 2).sum()) for part in parts)


def second_order_terms(G: torch.Tensor, h: float = 1e-4) -> tuple[float, float, float]:
    r"""The three sums :math:`(T_2, T_3, T_4)` that the :math:`O(n^{-2})` terms of products of noisy polar factors need.

    For isotropic noise of unit entry variance around one full-rank ``m x n`` matrix ``G``, with
    :math:`\partial_p` the derivative along the ``p``-th entry and :math:`\Delta = \sum_p \partial_p^2`:

    * :math:`T_2 = \|\Delta\mathrm{Ortho}(G)\|_F^2 = 4\|b_1\|_F^2` (:math:`b_1` of :func:`polar_bias_isotropic`
      at unit variance, :math:`\Delta\mathrm{Ortho} = 2b_1`);
    * :math:`T_3 = \sum_{p,q}\|\partial_p\partial_q\mathrm{Ortho}(G)\|_F^2`, each mixed second derivative from
      :func:`polar_expansion` by polarisation, :math:`Q_2(e_p+e_q) - Q_2(e_p) - Q_2(e_q)`;
    * :math:`T_4 = \sum_p\langle\partial_p\Delta\mathrm{Ortho}(G), \partial_p\mathrm{Ortho}(G)\rangle
      = 2\sum_p\langle\partial_p b_1, L_1(e_p)\rangle`, with :math:`\partial_p b_1` by central differences of
      step ``h`` (error :math:`O(h^2)`).

    Because :math:`\|\mathrm{Ortho}\|_F^2` is constant, :math:`T_1 + T_2 + 2T_3 = -4T_4` with
    :math:`T_1 = \langle\Delta^2\mathrm{Ortho}(G), \mathrm{Ortho}(G)\rangle` (the chapters *bias-line* and
    *nonlinear-regime* assert it). Costs :math:`(mn)^2` second-order terms: for small matrices.
    """
    checks.matrix(G, "G")
    checks.exact_dtype(G, "G")
    if G.ndim != 2:
        raise ValueError(f"G must be a single matrix, got shape {tuple(G.shape)}")
    h = checks.positive_real(h, "h")
    m, n = G.shape
    checks.allocation((m * n, m * n, m, n), G.dtype, "G (an (mn)^2 x m x n table of second derivatives)", copies=4)
    e = torch.eye(m * n, dtype=G.dtype, device=G.device).reshape(m * n, m, n)
    L1, Q2 = polar_expansion(G, e)
    H = polar_expansion(G, e[:, None] + e[None])[1] - Q2[:, None] - Q2[None]      # d_p d_q O, by polarisation
    b1 = lambda X: polar_bias_isotropic(X, 1.0)                                    # noqa: E731
    d_b1 = (b1(G + h * e) - b1(G - h * e)) / (2 * h)                               # d_p b_1 = d_p Delta O / 2
    return 4 * (b1(G) ** 2).sum().item(), (H**2).sum().item(), 2 * (d_b1 * L1).sum().item()


def laplacian_along(f, X: torch.Tensor, factors: torch.Tensor, h: float) -> torch.Tensor:
    r"""The covariance-weighted Laplacian :math:`\Delta_\Sigma f(X) = \sum_j D^2 f(X)[F_j, F_j]` by central differences.

    For :math:`\Sigma = \sum_j \mathrm{vec}F_j\,\mathrm{vec}F_j^\top` (``factors`` ``(K, m, n)``), this is the
    operator of Gaussian heat flow with covariance :math:`\Sigma` (:math:`\E f(X + E) = f(X) +
    \tfrac12\Delta_\Sigma f(X) + \dots`): second differences of step ``h`` along each unit direction
    :math:`F_j/\|F_j\|_F`, weighted by :math:`\|F_j\|_F^2` (error :math:`O(h^2)`). With :math:`F_j = \sqrt v\,e_j`
    it is ``v * laplacian(f, X, h)``. ``f`` maps an ``(m, n)`` matrix to a tensor; zero factors are skipped.
    """
    checks.function(f, "f")
    checks.matrix(X, "X")
    checks.exact_dtype(X, "X")
    checks.matrix(factors, "factors", min_ndim=3)
    if factors.ndim != 3 or factors.shape[-2:] != X.shape[-2:]:
        raise ValueError(f"factors must be (K, {X.shape[-2]}, {X.shape[-1]}), got {tuple(factors.shape)}")
    checks.same_kind(X, factors, "X", "factors")
    h = checks.positive_real(h, "h")
    centre, total = f(X), 0.0
    if not isinstance(centre, torch.Tensor):
        raise ValueError(f"f must return a tensor, got {type(centre).__name__}")
    for F_j in factors:
        n_j = torch.linalg.matrix_norm(F_j).item()
        if n_j > 0:
            total = total + n_j**2 * (f(X + h * F_j / n_j) + f(X - h * F_j / n_j) - 2 * centre) / h**2
    return total if isinstance(total, torch.Tensor) else torch.zeros_like(centre)
