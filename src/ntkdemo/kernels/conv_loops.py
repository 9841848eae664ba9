r"""Compiled loops of the convolutional fold, over whole position covariances (a
pooling read-out) or their diagonals (``Flatten`` without pooling).

:mod:`.conv` describes the maths; these loops compute it one pair of images at a time.
Each thread (:func:`fold_pairs` releases the GIL) takes a share of the pairs and has
its own workspace: the NNGP and NTK of a pair before and after a step, written once
and reused by every pair, since first writes to fresh memory cost more than the
arithmetic (:func:`workspace_entries`: 22.6 MB per thread at 28 x 28). Layers arrive
encoded (:data:`CONV`, :data:`RELU`, :data:`ERF`, ... with a row of parameters each:
:math:`\sigma_w^2, \sigma_b^2` of a conv or dense layer, an activation's own),
per-image variances as one flat row per image with the offset of each activation's map.

**Planes.** A covariance is held as planes: for each position :math:`p` of the first
image, the :math:`(H + 2) \times (W + 2)` plane of positions :math:`p'` of the second
with a border of zeros (a diagonal is one such plane). A conv's nine-offset sum then
adds nine copies of a plane shifted by :math:`d_y (W + 2) + d_x` over one long
contiguous run (from :math:`p' = (0, 0)` to :math:`(H-1, W-1)`, the borders between
rows included), reading the zeros of ``SAME`` padding from the border instead of
testing bounds; the border entries written on the way are cleared after each step, so
that the border stays zero. Every loop over a plane is one vectorised run
(``error_model="numpy"``: a division is a division, with no check for zero that would
stop the vectoriser); every activation's angle comes from :func:`_angle`, an
``arctan2`` in straight-line code with one division (exact at :math:`\cos = \pm 1`),
and a zero variance gives 0. Each activation's rule (:func:`_dual`) is the one of
:mod:`.activations`, written for one entry; the array fold of :mod:`.conv_arrays` is
the reference the tests hold these loops to.
"""

from __future__ import annotations

import numpy as np

from ..compiled import jit
from .activations import UNSNAPPED

CONV, POOL, GLOBAL_POOL, FLATTEN, DENSE, FAN_OUT, BRANCH, FAN_IN = range(8)
"""Codes of the layers that are not activations. A ``Parallel`` is ``FAN_OUT``, its first
branch, ``BRANCH``, its second, ..., ``FAN_IN``: ``FAN_OUT`` keeps its input, ``BRANCH``
adds the branch's output to the sum so far and starts the next from the kept input,
``FAN_IN`` adds the sum to the last branch's output."""

RELU, ABRELU, ERF, GELU, LAYERNORM, IDENTITY = range(8, 14)
"""Codes of the activations with a compiled rule (:func:`_dual`); an activation's
parameters ride in its step's row of ``params`` (``ABRelu``: a, b; ``Erf``: a, b, c;
``LayerNorm``: eps)."""


@jit(inline="always", error_model="numpy")
def is_activation(code):  # pragma: no cover - compiled
    """Whether ``code`` is an activation's."""
    return code >= RELU


def workspace_rows(codes: np.ndarray) -> int:
    """Rows of a thread's workspace: the current and next NNGP and NTK (4), and for a
    ``Parallel`` its kept input and the sum of its branches (4 more)."""
    return 8 if FAN_OUT in codes else 4


def workspace_entries(height: int, width: int, full: bool) -> int:
    """Entries of each of a thread's workspace rows: the planes of one covariance,
    :math:`H W (H+2)(W+2)` for a whole one (``full``), :math:`(H+2)(W+2)` for a diagonal."""
    plane = (height + 2) * (width + 2)
    return height * width * plane if full else plane


@jit(inline="always", error_model="numpy")
def _run(height, width):  # pragma: no cover - compiled
    """``first, last``: the run of a bordered plane from position (0, 0) to (H-1, W-1)."""
    row = width + 2
    return row + 1, height * row + width + 1


@jit(inline="always", error_model="numpy")
def _clear_border(plane, height, width):  # pragma: no cover - compiled
    """Zero the border entries inside a plane's run (left and right of each row)."""
    row = width + 2
    for k in range(1, height):
        plane[k * row + width + 1] = 0.0
        plane[(k + 1) * row] = 0.0


@jit(inline="always", error_model="numpy")
def _nine_offset_sum(
    plane, up_left, up, up_right, left, centre, right, down_left, down, down_right, height, width
):  # pragma: no cover - compiled
    r"""``plane`` :math:`= \sum_d` of the nine bordered planes, each shifted by its offset
    :math:`d`, over the run (the rest zero): one pass, the sum held in registers. The
    run is taken as slices indexed from 0 (an index that could be negative costs numba a
    wraparound test per entry, which stops the vectoriser)."""
    first, last = _run(height, width)
    row = width + 2
    into = plane[first:last]
    a0, a1, a2 = up_left[first - row - 1 :], up[first - row :], up_right[first - row + 1 :]
    a3, a4, a5 = left[first - 1 :], centre[first:], right[first + 1 :]
    a6, a7, a8 = down_left[first + row - 1 :], down[first + row :], down_right[first + row + 1 :]
    for m in range(last - first):
        into[m] = ((a0[m] + a1[m]) + (a2[m] + a3[m])) + ((a4[m] + a5[m]) + (a6[m] + a7[m])) + a8[m]
    plane[:first] = 0.0
    plane[last:] = 0.0
    _clear_border(plane, height, width)


@jit(inline="always", error_model="numpy")
def _sum_plane(source, plane, i, j, zero, height, width):  # pragma: no cover - compiled
    r"""``plane`` :math:`(p') = \sum_d source(p + d, p' + d)` over the nine offsets for
    :math:`p = (i, j)`, zero outside (nine times the conv's mean :math:`A`); ``source``
    holds bordered planes (H, W, plane), ``zero`` a plane of zeros for the offsets past
    the image's edge."""
    up, down, left, right = i > 0, i < height - 1, j > 0, j < width - 1
    _nine_offset_sum(
        plane,
        source[i - 1, j - 1] if up and left else zero,
        source[i - 1, j] if up else zero,
        source[i - 1, j + 1] if up and right else zero,
        source[i, j - 1] if left else zero,
        source[i, j],
        source[i, j + 1] if right else zero,
        source[i + 1, j - 1] if down and left else zero,
        source[i + 1, j] if down else zero,
        source[i + 1, j + 1] if down and right else zero,
        height,
        width,
    )


@jit(inline="always", error_model="numpy")
def _patch_products(
    plane, a, channel_planes, i, j, low, high, height, width
):  # pragma: no cover - compiled
    r"""``plane`` :math:`(p') = \sum_{d} \sum_c a(p + d, c)\, b(p' + d, c) / C` for
    :math:`p = (i, j)` over the offsets :math:`d \in [low, high)^2` inside the image:
    the pixels' covariance (``0, 1``) or its nine-offset sum (``-1, 2``), straight from
    the images; ``channel_planes`` holds :math:`b / C` as bordered planes."""
    first, last = _run(height, width)
    row = width + 2
    plane[:] = 0.0
    into = plane[first:last]
    weights = np.zeros(9)  # a(p + d, c) for the offsets taken, 0 for the others
    for c in range(a.shape[2]):
        for dy in range(max(low, -i), min(high, height - i)):
            for dx in range(max(low, -j), min(high, width - j)):
                weights[(dy + 1) * 3 + dx + 1] = a[i + dy, j + dx, c]
        channel = channel_planes[c]
        w0, w1, w2, w3, w4, w5, w6, w7, w8 = weights
        b0, b1, b2 = channel[first - row - 1 :], channel[first - row :], channel[first - row + 1 :]
        b3, b4, b5 = channel[first - 1 :], channel[first:], channel[first + 1 :]
        b6, b7, b8 = channel[first + row - 1 :], channel[first + row :], channel[first + row + 1 :]
        for m in range(last - first):
            into[m] += (
                ((w0 * b0[m] + w1 * b1[m]) + (w2 * b2[m] + w3 * b3[m]))
                + ((w4 * b4[m] + w5 * b5[m]) + (w6 * b6[m] + w7 * b7[m]))
                + w8 * b8[m]
            )
    _clear_border(plane, height, width)


@jit(inline="always", error_model="numpy")
def _conv_plane(source, into_nngp, into_ntk, i, j):  # pragma: no cover - compiled
    """The nine-offset sums of a conv for the plane :math:`p = (i, j)`, into
    ``into_nngp`` and ``into_ntk``. ``source`` is the layer's input, ``(nngp, ntk,
    ntk_zero, patches, a, channel_planes, zero, height, width)``: the sums come from
    the images' patches for a first conv (``patches``), are zeros for an NTK still
    zero, else :func:`_sum_plane`."""
    nngp, ntk, ntk_zero, patches, a, channel_planes, zero, height, width = source
    if patches:
        _patch_products(into_nngp, a, channel_planes, i, j, -1, 2, height, width)
    else:
        _sum_plane(nngp, into_nngp, i, j, zero, height, width)
    if ntk_zero:
        into_ntk[:] = 0.0
    else:
        _sum_plane(ntk, into_ntk, i, j, zero, height, width)


@jit(error_model="numpy")
def _activated_plane(source, into_nngp, into_ntk, i, j, step):  # pragma: no cover - compiled
    r""":func:`_conv_plane` for :math:`p = (i, j)`, then its activation
    (:func:`_activation_plane`) while the plane is in cache; ``step`` is ``(code,
    params, scale, bias, tangent, map_a, map_b)``.

    A position of zero variance (a black patch of the first image, the bias zero) has
    zero sources at every offset: its pre-activations are 0 whatever the weights, so
    both planes are zero after an activation with :math:`\phi(0) = 0`
    (:func:`_keeps_zero`): they are written as such, with no sums and no angles (a
    quarter of a Fashion-MNIST image's 3 x 3 patches)."""
    code, params, scale, bias, tangent, map_a, map_b = step
    height, width = source[7], source[8]
    variance = map_a[(i + 1) * (width + 2) + j + 1]
    if variance == 0.0 and _keeps_zero(code, params):
        into_nngp[:] = 0.0
        into_ntk[:] = 0.0
        return
    _conv_plane(source, into_nngp, into_ntk, i, j)
    _activation_plane(
        code,
        params,
        into_nngp,
        into_ntk,
        scale,
        bias,
        tangent,
        variance,
        map_b,
        map_b,
        False,
        height,
        width,
    )


@jit(inline="always", error_model="numpy")
def _keeps_zero(code, params):  # pragma: no cover - compiled
    r"""Whether the activation has :math:`\phi(0) = 0` (all but an ``Erf`` with
    :math:`c \ne 0`): a pre-activation that is 0 for every weight stays 0."""
    return code != ERF or params[2] == 0.0


@jit(inline="always", error_model="numpy")
def _angle(sine, cosine):  # pragma: no cover - compiled
    r"""``arctan2(sine, cosine)`` for ``sine >= 0``, in straight-line code with one division.

    libm's ``atan2`` is a call per entry, which keeps an activation's step from vectorising
    (19 ns against 1.9 ns per entry here). This is fdlibm's ``atan`` (Sun, 1993; the
    polynomial and the split :math:`\pi/4, \arctan\frac12` constants are its own) on
    :math:`t = s/c \in [0, 1]` for :math:`s = \min(|\sin|, |\cos|)`,
    :math:`c = \max(\ldots)`, its reduced argument formed from :math:`s, c` in one
    division (:math:`(s - c)/(s + c)` for :math:`t \ge 0.6875`, :math:`(2s - c)/(2c + s)`
    for :math:`t \ge 0.4375`, else :math:`s/c`), every branch a select, then the octant:
    :math:`\pi/2 - \theta` above the diagonal, :math:`\pi - \theta` for :math:`\cos < 0`.
    ``(0, 0)`` gives 0, as ``arctan2``.
    """
    magnitude = abs(cosine)
    larger = max(sine, magnitude)
    smaller = min(sine, magnitude)
    upper = (smaller >= 0.6875 * larger) & (larger > 0.0)  # (0, 0) is in neither
    middle = (smaller >= 0.4375 * larger) & (larger > 0.0)
    numerator = smaller - larger if upper else (2.0 * smaller - larger if middle else smaller)
    denominator = smaller + larger if upper else (2.0 * larger + smaller if middle else larger)
    x = numerator / denominator if larger > 0.0 else 0.0
    high = 7.85398163397448278999e-01 if upper else (4.63647609000806093515e-01 if middle else 0.0)
    low = 3.06161699786838301793e-17 if upper else (2.26987774529616870924e-17 if middle else 0.0)
    z = x * x
    w = z * z
    odd = z * (
        3.33333333333329318027e-01
        + w
        * (
            1.42857142725034663711e-01
            + w
            * (
                9.09088713343650656196e-02
                + w
                * (
                    6.66107313738753120669e-02
                    + w * (4.97687799461593236017e-02 + w * 1.62858201153657823623e-02)
                )
            )
        )
    )
    even = w * (
        -1.99999999998764832476e-01
        + w
        * (
            -1.11111104054623557880e-01
            + w
            * (
                -7.69187620504482999495e-02
                + w * (-5.83357013379057348645e-02 + w * -3.65315727442169155270e-02)
            )
        )
    )
    angle = high - ((x * (odd + even) - low) - x)
    angle = (
        (1.57079632679489655800e00 - angle) + 6.12323399573676603587e-17
        if sine > magnitude
        else angle
    )
    return (
        (3.14159265358979311600e00 - angle) + 1.22464679914735320717e-16 if cosine < 0.0 else angle
    )


@jit(inline="always", error_model="numpy")
def _dual(code, params, q, variance_a, variance_b):  # pragma: no cover - compiled
    r"""The activation ``code``'s NNGP :math:`K'` and derivative kernel :math:`\dot K` at
    one entry of NNGP :math:`q` and variances :math:`q_a, q_b`: the rules of
    :mod:`.activations` (their docstrings give the maths), held to them by the tests,
    with each angle from :func:`_angle` (so that a plane's loop vectorises):
    :math:`\arcsin(y / \sqrt{P}) = \operatorname{sign}(y)
    \operatorname{atan2}(|y|, \sqrt{(P - y^2)_+})` for ``Erf``, :math:`\beta =
    \operatorname{sign}(K) \operatorname{atan2}(|K|, \Delta)` for ``Gelu``. Every
    arc-cosine step takes :math:`q_a q_b (1 - \epsilon)`
    (:data:`~.activations.UNSNAPPED`)."""
    inverse = 1.0 / (2.0 * np.pi)
    if code == RELU or code == ABRELU:
        sine = np.sqrt(max(variance_a * variance_b * UNSNAPPED - q * q, 0.0))
        angle = _angle(sine, q)
        if code == RELU:
            rest = np.pi - angle
            return max((sine + rest * q) * inverse, 0.0), rest * inverse
        a, b = params[0], params[1]
        gap = (a - b) ** 2
        derivative = ((a * a + b * b) * np.pi - gap * angle) * inverse
        return gap * sine * inverse + derivative * q, derivative
    if code == ERF:
        a, b, c = params[0], params[1], params[2]
        scale = 2.0 * b * b
        products = (1.0 + scale * variance_a) * (1.0 + scale * variance_b)
        y = scale * q
        remaining = products - y * y
        angle = _angle(abs(y), np.sqrt(max(remaining, 0.0)))
        nngp = (2.0 * a * a / np.pi) * (angle if y >= 0.0 else -angle) + c * c
        return nngp, (2.0 * a * a * scale / np.pi) / np.sqrt(max(remaining, 1.0))
    if code == GELU:
        shifted = (1.0 + variance_a) * (1.0 + variance_b)
        products = variance_a * variance_b
        delta_squared = max(shifted - q * q, 1.0)
        delta = np.sqrt(delta_squared)
        angle = _angle(abs(q), delta)
        angle = angle if q >= 0.0 else -angle
        spread = (q * q + products * delta_squared) / (shifted * delta)
        nngp = q / 4 + (q * angle + spread) * inverse
        slope = 1.0 / delta_squared + (1.0 - products) / shifted + 1.0
        return nngp, 0.25 + angle * inverse + q * slope * inverse / delta
    if code == LAYERNORM:
        factor = 1.0 / np.sqrt((variance_a + params[0]) * (variance_b + params[0]))
        return q * factor, factor
    return q, 1.0  # IDENTITY


@jit(inline="always", error_model="numpy")
def _plane_loop(code, params, plane, height, width):  # pragma: no cover - compiled
    r"""In place over a plane's run, the conv's affine step :math:`q = s K + b` then the
    activation ``code`` (:func:`_dual`) with the variances :math:`q_a` (``variance``, or
    ``columns_a[m]`` where ``diagonal``) and :math:`q_b` = ``columns_b[m]``: the NNGP
    :math:`K'(q)` and the NTK :math:`(t q + s \Theta) \dot K`; the border is cleared
    after. After a conv (on its nine-offset sums) ``t = 1``; an activation alone is
    ``s, b, t = 1, 0, 0``. ``plane`` is ``(nngp, ntk, s, b, t, variance, columns_a,
    columns_b, diagonal)``."""
    nngp, ntk, scale, bias, tangent, variance, columns_a, columns_b, diagonal = plane
    first, last = _run(height, width)
    nngp_run, ntk_run = nngp[first:last], ntk[first:last]
    a_run, b_run = columns_a[first:last], columns_b[first:last]
    for m in range(last - first):
        q = scale * nngp_run[m] + bias
        nngp_run[m], derivative = _dual(
            code, params, q, a_run[m] if diagonal else variance, b_run[m]
        )
        ntk_run[m] = (tangent * q + scale * ntk_run[m]) * derivative
    _clear_border(nngp, height, width)
    _clear_border(ntk, height, width)


@jit(error_model="numpy")
def _activation_plane(
    code,
    params,
    nngp,
    ntk,
    scale,
    bias,
    tangent,
    variance,
    columns_a,
    columns_b,
    diagonal,
    height,
    width,
):  # pragma: no cover - compiled
    """:func:`_plane_loop` with ``code`` a constant in each call, so that each
    activation's loop is compiled on its own, its branches folded away."""
    plane = (nngp, ntk, scale, bias, tangent, variance, columns_a, columns_b, diagonal)
    if code == RELU:
        _plane_loop(RELU, params, plane, height, width)
    elif code == ABRELU:
        _plane_loop(ABRELU, params, plane, height, width)
    elif code == ERF:
        _plane_loop(ERF, params, plane, height, width)
    elif code == GELU:
        _plane_loop(GELU, params, plane, height, width)
    elif code == LAYERNORM:
        _plane_loop(LAYERNORM, params, plane, height, width)
    else:
        _plane_loop(IDENTITY, params, plane, height, width)


@jit(inline="always", error_model="numpy")
def _pool_into(target, block, height, width):  # pragma: no cover - compiled
    """Add to the bordered ``target`` plane (h/2, w/2) the sums of the 2 x 2 blocks of
    the bordered ``block`` plane (h, w) (an odd last row or column dropped)."""
    half_height, half_width = height // 2, width // 2
    row, half_row = width + 2, half_width + 2
    for k in range(half_height):
        into = target[(k + 1) * half_row + 1 : (k + 1) * half_row + half_width + 1]
        for dk in range(2):
            start = (2 * k + dk + 1) * row + 1
            for m in range(half_width):
                into[m] += block[start + 2 * m] + block[start + 2 * m + 1]


@jit(error_model="numpy")
def _pool(source, target, height, width):  # pragma: no cover - compiled
    """``target`` planes (h/2, w/2, plane): 2 x 2 blocks of ``source`` (h, w, plane)
    averaged on both sides (an odd last row or column dropped)."""
    for i in range(height // 2):
        for j in range(width // 2):
            plane = target[i, j]
            plane[:] = 0.0
            for di in range(2):
                for dj in range(2):
                    _pool_into(plane, source[2 * i + di, 2 * j + dj], height, width)
            plane *= 1.0 / 16.0


@jit(error_model="numpy")
def _read_out(
    nngp, ntk, step, codes, params, var_a, var_b, offsets, activation, record
):  # pragma: no cover - compiled
    """The layers from ``step`` on (``Dense`` and activations) on one pair's NNGP and NTK;
    an activation reads the pair's variances from the first entry of its slot (written
    there from the NNGP itself when ``record``: a self pair)."""
    while step < len(codes):
        if is_activation(codes[step]):
            if record:
                var_a[offsets[activation]] = nngp
            nngp, derivative = _dual(
                codes[step],
                params[step],
                nngp,
                var_a[offsets[activation]],
                var_b[offsets[activation]],
            )
            ntk = ntk * derivative
            activation += 1
        else:
            nngp = params[step, 0] * nngp + params[step, 1]
            ntk = nngp + params[step, 0] * ntk
        step += 1
    return nngp, ntk


@jit(error_model="numpy")
def _planes(buffer, height, width):  # pragma: no cover - compiled
    """The first entries of a flat workspace row as bordered planes (h, w, plane)."""
    plane = (height + 2) * (width + 2)
    return buffer[: height * width * plane].reshape((height, width, plane))


@jit(error_model="numpy")
def _affine_planes(nngp, ntk, scale, bias, height, width):  # pragma: no cover - compiled
    """A conv that no activation follows: :math:`K = s K + b`, :math:`\\Theta = K +
    s \\Theta` inside each plane (the border stays zero)."""
    row = width + 2
    for i in range(nngp.shape[0]):
        for j in range(nngp.shape[1]):
            for k in range(height):
                for column in range(width):
                    m = (k + 1) * row + column + 1
                    nngp[i, j, m] = scale * nngp[i, j, m] + bias
                    ntk[i, j, m] = nngp[i, j, m] + scale * ntk[i, j, m]


@jit(nogil=True, error_model="numpy")
def fold_one_pair(
    a, b, var_a, var_b, offsets, codes, params, record, workspace
):  # pragma: no cover - compiled
    """NNGP and NTK of images ``a``, ``b`` (H, W, C); with ``record`` (a self pair) each
    activation reads its own diagonal and writes it into ``var_a`` (== ``var_b``).

    ``workspace`` (:func:`workspace_rows` rows of :func:`workspace_entries`) holds the
    current and the next NNGP and NTK, then for a ``Parallel`` its kept input and the sum
    of its branches: written once, reused by every pair of the thread.
    """
    height, width, channels = a.shape
    nngp = _planes(workspace[0], height, width)
    ntk = _planes(workspace[1], height, width)
    spare_nngp = _planes(workspace[2], height, width)
    spare_ntk = _planes(workspace[3], height, width)
    kept_nngp, kept_ntk, total_nngp, total_ntk = nngp, ntk, nngp, ntk  # set by FAN_OUT
    branches = 0  # non-empty branches of the current Parallel summed so far
    plane_size = (height + 2) * (width + 2)
    zero = np.zeros(plane_size)
    scratch = np.empty((2, plane_size))  # a plane's NNGP and NTK between conv and pool
    row = width + 2
    channel_planes = np.zeros((channels, plane_size))  # b's channels, bordered, / C
    for k in range(height):
        for m in range(width):
            for c in range(channels):
                channel_planes[c, (k + 1) * row + m + 1] = b[k, m, c] / channels
    # A first conv sums the images' patches straight into its planes (each plane is
    # activated at once); other layers start from the covariance of the pixels.
    from_patches = codes[0] == CONV
    if not from_patches:
        for i in range(height):
            for j in range(width):
                _patch_products(nngp[i, j], a, channel_planes, i, j, 0, 1, height, width)
        ntk[...] = 0.0
    ntk_zero = True  # until the first affine step: its nine-offset sums are zero too
    activation = 0
    step = 0
    nngp_out = 0.0
    ntk_out = 0.0
    while step < len(codes):
        code = codes[step]
        row = width + 2
        if code == CONV or is_activation(code):
            scale, bias, tangent = 1.0, 0.0, 0.0  # an activation alone
            activated = is_activation(code) or (
                step + 1 < len(codes) and is_activation(codes[step + 1])
            )
            act = step + 1 if code == CONV and activated else step  # the activation's step
            map_a = var_a[offsets[activation] : offsets[activation + 1]] if activated else zero
            map_b = var_b[offsets[activation] : offsets[activation + 1]] if activated else zero
            # Without ``record`` the variances are known: each plane's sums are
            # activated while still in cache. A self pair records its diagonal first.
            fused = code == CONV and activated and not record
            # ... and a pool after it reads the activated planes while still in cache.
            # A global pool only sums them: the last layer is never stored.
            after = codes[step + 2] if fused and step + 2 < len(codes) else -1
            if code == CONV:
                scale, bias, tangent = params[step, 0] / 9.0, params[step, 1], 1.0
                patches = from_patches and step == 0
                source = (nngp, ntk, ntk_zero, patches, a, channel_planes, zero, height, width)
                act_step = (codes[act], params[act], scale, bias, tangent, map_a, map_b)
                if after == GLOBAL_POOL:
                    for i in range(height):
                        for j in range(width):
                            _activated_plane(source, scratch[0], scratch[1], i, j, act_step)
                            nngp_out += scratch[0].sum()
                            ntk_out += scratch[1].sum()
                    nngp_out /= (height * width) ** 2
                    ntk_out /= (height * width) ** 2
                    step += 3  # the conv, its activation and the pool
                    break
                if after == POOL:
                    into_nngp = _planes(spare_nngp.reshape(-1), height // 2, width // 2)
                    into_ntk = _planes(spare_ntk.reshape(-1), height // 2, width // 2)
                    for i in range(height // 2):
                        for j in range(width // 2):
                            into_nngp[i, j, :] = 0.0
                            into_ntk[i, j, :] = 0.0
                            for di in range(2):
                                for dj in range(2):
                                    _activated_plane(
                                        source,
                                        scratch[0],
                                        scratch[1],
                                        2 * i + di,
                                        2 * j + dj,
                                        act_step,
                                    )
                                    _pool_into(into_nngp[i, j], scratch[0], height, width)
                                    _pool_into(into_ntk[i, j], scratch[1], height, width)
                            into_nngp[i, j, :] *= 1.0 / 16.0
                            into_ntk[i, j, :] *= 1.0 / 16.0
                    height, width = height // 2, width // 2
                    spare_nngp = _planes(nngp.reshape(-1), height, width)
                    spare_ntk = _planes(ntk.reshape(-1), height, width)
                    nngp, ntk = into_nngp, into_ntk
                    step += 1  # the pool is done too
                else:
                    for i in range(height):
                        for j in range(width):
                            into_ntk = ntk[i, j] if ntk_zero else spare_ntk[i, j]
                            if fused:
                                _activated_plane(source, spare_nngp[i, j], into_ntk, i, j, act_step)
                            else:
                                _conv_plane(source, spare_nngp[i, j], into_ntk, i, j)
                    nngp, spare_nngp = spare_nngp, nngp
                    if not ntk_zero:
                        ntk, spare_ntk = spare_ntk, ntk
            if activated and not fused:
                if record:
                    for i in range(height):
                        for j in range(width):
                            diagonal = (i + 1) * row + j + 1
                            map_a[diagonal] = scale * nngp[i, j, diagonal] + bias
                for i in range(height):
                    for j in range(width):
                        _activation_plane(
                            codes[act],
                            params[act],
                            nngp[i, j],
                            ntk[i, j],
                            scale,
                            bias,
                            tangent,
                            map_a[(i + 1) * row + j + 1],
                            map_b,
                            map_b,
                            False,
                            height,
                            width,
                        )
            if activated:
                activation += 1
                step += code == CONV  # the conv's activation is done too
            else:  # a conv that no activation follows
                _affine_planes(nngp, ntk, scale, bias, height, width)
            ntk_zero = False
        elif code == POOL:
            pooled_nngp = _planes(spare_nngp.reshape(-1), height // 2, width // 2)
            pooled_ntk = _planes(spare_ntk.reshape(-1), height // 2, width // 2)
            _pool(nngp, pooled_nngp, height, width)
            _pool(ntk, pooled_ntk, height, width)
            height, width = height // 2, width // 2
            spare_nngp = _planes(nngp.reshape(-1), height, width)
            spare_ntk = _planes(ntk.reshape(-1), height, width)
            nngp, ntk = pooled_nngp, pooled_ntk
        elif code == FAN_OUT:
            if ntk_zero:
                ntk[...] = 0.0
                ntk_zero = False
            kept_nngp = _planes(workspace[4], height, width)
            kept_ntk = _planes(workspace[5], height, width)
            total_nngp = _planes(workspace[6], height, width)
            total_ntk = _planes(workspace[7], height, width)
            kept_nngp[...] = nngp
            kept_ntk[...] = ntk
            branches = 0
        elif code == BRANCH:
            _end_branch(nngp, kept_nngp, total_nngp, branches)
            _end_branch(ntk, kept_ntk, total_ntk, branches)
            branches += 1
        elif code == FAN_IN:
            _fan_in(nngp, kept_nngp, total_nngp, params[step, 0], branches)
            _fan_in(ntk, kept_ntk, total_ntk, params[step, 0], branches)
        elif code == GLOBAL_POOL:
            nngp_out = nngp.sum() / (height * width) ** 2
            ntk_out = ntk.sum() / (height * width) ** 2
            step += 1
            break
        elif code == FLATTEN:
            for i in range(height):
                for j in range(width):
                    nngp_out += nngp[i, j, (i + 1) * row + j + 1]
                    ntk_out += ntk[i, j, (i + 1) * row + j + 1]
            nngp_out /= height * width
            ntk_out /= height * width
            step += 1
            break
        step += 1
    return _read_out(
        nngp_out, ntk_out, step, codes, params, var_a, var_b, offsets, activation, record
    )


@jit(inline="always", error_model="numpy")
def _end_branch(state, kept, total, branches):  # pragma: no cover - compiled
    """The end of a ``Parallel``'s branch: its output ``state`` into the ``total`` of
    the branches (the first of them when ``branches`` is 0), then ``state`` back to the
    ``kept`` input for the next branch."""
    if branches == 0:
        total[...] = state
    else:
        total += state
    state[...] = kept


@jit(inline="always", error_model="numpy")
def _fan_in(state, kept, total, identities, branches):  # pragma: no cover - compiled
    """A ``Parallel``'s sum, into ``state`` (its last branch's output): ``identities``
    times its kept input (its other empty branches) and, after ``branches`` other
    branches, their ``total``."""
    if identities > 0.0:
        state += identities * kept
    if branches > 0:
        state += total


@jit(nogil=True, error_model="numpy")
def fold_one_pair_diagonal(
    a, b, var_a, var_b, offsets, codes, params, record, workspace
):  # pragma: no cover - compiled
    """As :func:`fold_one_pair` for a ``Flatten`` read-out without pooling: only the
    entries :math:`K(p, p)` (a conv maps them among themselves), one plane per pair."""
    height, width, channels = a.shape
    size = height * width
    row = width + 2
    nngp, ntk, spare = workspace[0], workspace[1], workspace[2]
    kept_nngp, kept_ntk, total_nngp, total_ntk = nngp, ntk, nngp, ntk  # set by FAN_OUT
    branches = 0
    first, last = _run(height, width)
    inverse = 1.0 / channels
    nngp[:] = 0.0
    for c in range(channels):  # channels outermost: the rows of positions vectorise
        for i in range(height):
            into = nngp[(i + 1) * row + 1 : (i + 1) * row + width + 1]
            for j in range(width):
                into[j] += a[i, j, c] * b[i, j, c] * inverse
    ntk[:] = 0.0
    ntk_zero = True
    activation = 0
    step = 0
    nngp_out = 0.0
    ntk_out = 0.0
    while step < len(codes):
        code = codes[step]
        if code == CONV or is_activation(code):
            scale, bias, tangent = 1.0, 0.0, 0.0  # an activation alone
            if code == CONV:
                _nine_offset_sum(
                    spare, nngp, nngp, nngp, nngp, nngp, nngp, nngp, nngp, nngp, height, width
                )
                nngp, spare = spare, nngp
                if not ntk_zero:
                    _nine_offset_sum(
                        spare, ntk, ntk, ntk, ntk, ntk, ntk, ntk, ntk, ntk, height, width
                    )
                    ntk, spare = spare, ntk
                scale, bias, tangent = params[step, 0] / 9.0, params[step, 1], 1.0
            if is_activation(code) or (step + 1 < len(codes) and is_activation(codes[step + 1])):
                act = step + 1 if code == CONV else step  # the activation's step
                map_a = var_a[offsets[activation] : offsets[activation + 1]]  # bordered planes
                map_b = var_b[offsets[activation] : offsets[activation + 1]]
                if record:
                    map_a[first:last] = scale * nngp[first:last] + bias
                    _clear_border(map_a, height, width)
                _activation_plane(
                    codes[act],
                    params[act],
                    nngp,
                    ntk,
                    scale,
                    bias,
                    tangent,
                    1.0,
                    map_a,
                    map_b,
                    True,
                    height,
                    width,
                )
                activation += 1
                step += code == CONV  # the conv's activation is done too
            else:  # a conv that no activation follows
                nngp[first:last] = scale * nngp[first:last] + bias
                ntk[first:last] = nngp[first:last] + scale * ntk[first:last]
                _clear_border(nngp, height, width)
                _clear_border(ntk, height, width)
            ntk_zero = False
        elif code == FAN_OUT:
            kept_nngp, kept_ntk = workspace[4], workspace[5]
            total_nngp, total_ntk = workspace[6], workspace[7]
            kept_nngp[:] = nngp
            kept_ntk[:] = ntk
            ntk_zero = False
            branches = 0
        elif code == BRANCH:
            _end_branch(nngp, kept_nngp, total_nngp, branches)
            _end_branch(ntk, kept_ntk, total_ntk, branches)
            branches += 1
        elif code == FAN_IN:
            _fan_in(nngp, kept_nngp, total_nngp, params[step, 0], branches)
            _fan_in(ntk, kept_ntk, total_ntk, params[step, 0], branches)
        elif code == FLATTEN:
            nngp_out = nngp.sum() / size
            ntk_out = ntk.sum() / size
            step += 1
            break
        step += 1
    return _read_out(
        nngp_out, ntk_out, step, codes, params, var_a, var_b, offsets, activation, record
    )


@jit(nogil=True, error_model="numpy", cache=False)
def fold_pairs(
    fold, images_a, images_b, rows, cols, variances_a, variances_b, encoded, nngp, ntk, workspace
):  # pragma: no cover - compiled
    """``nngp[i, j], ntk[i, j]`` (the output matrices) of the pairs ``(images_a[i],
    images_b[j])`` for ``i, j = rows[p], cols[p]`` by ``fold`` (:func:`fold_one_pair` or
    :func:`fold_one_pair_diagonal`); ``encoded`` is ``(offsets, codes, params)``.
    Releases the GIL: threads run it on disjoint pairs, each with its own ``workspace``.
    Not cached on disk: numba's cache cannot hold a function taking a function
    (``fold``; numba issues 6251, 9348); the folds it calls are cached, so compiling it
    is quick."""
    offsets, codes, params = encoded
    for p in range(len(rows)):
        nngp[rows[p], cols[p]], ntk[rows[p], cols[p]] = fold(
            images_a[rows[p]],
            images_b[cols[p]],
            variances_a[rows[p]],
            variances_b[cols[p]],
            offsets,
            codes,
            params,
            False,
            workspace,
        )


@jit(nogil=True, error_model="numpy", cache=False)
def self_variances(
    fold, images, variances, encoded, workspace, nngp, ntk
):  # pragma: no cover - compiled
    """Each image's variances before each activation, into ``variances`` (n, total), by
    ``fold`` on the pairs (x, x), and those pairs' kernels into ``nngp``, ``ntk`` (n,): a
    Gram matrix's diagonal, exact (every angle 0 there). Not cached on disk, as
    :func:`fold_pairs`."""
    offsets, codes, params = encoded
    for p in range(len(images)):
        nngp[p], ntk[p] = fold(
            images[p],
            images[p],
            variances[p],
            variances[p],
            offsets,
            codes,
            params,
            True,
            workspace,
        )
