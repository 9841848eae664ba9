r"""Compiled loops of the convolutional fold, over whole position covariances (a
pooling read-out) or their diagonals (``Flatten`` without pooling).

:mod:`.conv` describes the maths; these loops compute it one pair of images at a time.
Each thread (:func:`fold_pairs` releases the GIL) takes a share of the pairs and has
its own workspace: the NNGP and NTK of a pair before and after a step,
``4 * 8 * (H W)^2`` bytes (20 MB at 28 x 28), written once and reused by every pair,
since first writes to fresh memory cost more than the arithmetic. Layers arrive
encoded (:data:`CONV`, :data:`RELU`, ... with :math:`\sigma_w^2, \sigma_b^2`),
per-image variances as one flat row per image with the offset of each ReLU's map.

Every step reads and writes whole rows of the last position index, so the inner loops
are contiguous and vectorised (``error_model="numpy"``: a division is a division, with
no check for zero that would stop the vectoriser); the ReLU's angle comes from
:func:`_angle`, an ``arctan2`` within 2 ulp in straight-line code (exact at
:math:`\cos = \pm 1`), and a zero variance gives 0.
"""

from __future__ import annotations

import numpy as np

from ..compiled import jit

CONV, RELU, POOL, GLOBAL_POOL, FLATTEN, DENSE = range(6)


@jit(error_model="numpy")
def _shift_sum(source, target):  # pragma: no cover - compiled
    r"""``target`` :math:`= \sum_d source(p + d, p' + d)` over the nine offsets, zero
    outside (nine times the conv's mean :math:`A`)."""
    height, width = source.shape[0], source.shape[1]
    target[...] = 0.0
    for i in range(height):
        for j in range(width):
            for k in range(height):
                row = target[i, j, k]
                for dy in range(-1, 2):
                    if i + dy < 0 or i + dy >= height or k + dy < 0 or k + dy >= height:
                        continue
                    for dx in range(-1, 2):
                        if j + dx < 0 or j + dx >= width:
                            continue
                        shifted = source[i + dy, j + dx, k + dy]
                        first = max(0, -dx)
                        last = min(width, width - dx)
                        for m in range(first, last):
                            row[m] += shifted[m + dx]


@jit(inline="always", error_model="numpy")
def _angle(sine, cosine):  # pragma: no cover - compiled
    r"""``arctan2(sine, cosine)`` for ``sine >= 0``, within 2 ulp, in straight-line code.

    libm's ``atan2`` is a call per entry, which keeps the ReLU step from vectorising
    (19 ns against 1.9 ns per entry here). This is fdlibm's ``atan`` (Sun, 1993; the
    polynomial and the split :math:`\pi/4, \arctan\frac12` constants are its own) on
    :math:`t = \min/\max(|s|, |c|) \in [0, 1]`, every branch a select, then the
    octant: :math:`\pi/2 - \theta` above the diagonal, :math:`\pi - \theta` for
    :math:`c < 0`. ``(0, 0)`` gives 0, as ``arctan2``.
    """
    magnitude = abs(cosine)
    larger = max(sine, magnitude)
    t = min(sine, magnitude) / larger if larger > 0.0 else 0.0
    upper = t >= 0.6875
    middle = t >= 0.4375
    x = (t - 1.0) / (t + 1.0) if upper else ((2.0 * t - 1.0) / (2.0 + t) if middle else t)
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


@jit(error_model="numpy")
def _affine_relu(nngp, ntk, scale, bias, tangent, var_a, var_b):  # pragma: no cover - compiled
    r"""In place, an affine step then the arc-cosine step, in one pass over memory:
    :math:`K = s K + b`, :math:`\Theta = t K + s \Theta`, then the ReLU with the
    variances ``var_a`` (H, W) and ``var_b`` (H, W). After a conv (on its nine-offset
    sums) ``t = 1``; a ReLU alone is ``s, b, t = 1, 0, 0``."""
    height, width = var_a.shape
    size = height * width
    columns = var_b.reshape(size)
    inverse = 1.0 / (2.0 * np.pi)
    for i in range(height):
        for j in range(width):
            row_variance = var_a[i, j]
            row_nngp = nngp[i, j].reshape(size)
            row_ntk = ntk[i, j].reshape(size)
            for m in range(size):
                q = scale * row_nngp[m] + bias
                sine = np.sqrt(max(row_variance * columns[m] - q * q, 0.0))
                rest = np.pi - _angle(sine, q)
                row_nngp[m] = max((sine + rest * q) * inverse, 0.0)
                row_ntk[m] = (tangent * q + scale * row_ntk[m]) * (rest * inverse)


@jit(error_model="numpy")
def _pool(source, target):  # pragma: no cover - compiled
    """``target`` (h/2, w/2, h/2, w/2): 2 x 2 blocks of ``source`` averaged on both sides
    (an odd last row or column dropped)."""
    height, width = target.shape[0], target.shape[1]
    for i in range(height):
        for j in range(width):
            for k in range(height):
                row = target[i, j, k]
                row[:] = 0.0
                for di in range(2):
                    for dj in range(2):
                        for dk in range(2):
                            block = source[2 * i + di, 2 * j + dj, 2 * k + dk]
                            for m in range(width):
                                row[m] += block[2 * m] + block[2 * m + 1]
                for m in range(width):
                    row[m] *= 1.0 / 16.0


@jit(error_model="numpy")
def _dense_read_out(nngp, ntk, step, codes, w2s, b2s):  # pragma: no cover - compiled
    """The ``Dense`` layers from ``step`` on, on one pair's NNGP and NTK."""
    while step < len(codes):
        nngp = w2s[step] * nngp + b2s[step]
        ntk = nngp + w2s[step] * ntk
        step += 1
    return nngp, ntk


@jit(error_model="numpy")
def _view(buffer, height, width):  # pragma: no cover - compiled
    """The first ``(height * width)**2`` entries of a flat workspace as (h, w, h, w)."""
    return buffer[: (height * width) ** 2].reshape((height, width, height, width))


@jit(nogil=True, error_model="numpy")
def fold_one_pair(
    a, b, var_a, var_b, offsets, codes, w2s, b2s, record, workspace
):  # pragma: no cover - compiled
    """NNGP and NTK of images ``a``, ``b`` (H, W, C); with ``record`` (a self pair) each
    ReLU reads its own diagonal and writes it into ``var_a`` (== ``var_b``).

    ``workspace`` (4, (H W)^2) holds the current and the next NNGP and NTK: written
    once, reused by every pair of the thread.
    """
    height, width, channels = a.shape
    nngp = _view(workspace[0], height, width)
    ntk = _view(workspace[1], height, width)
    spare_nngp = _view(workspace[2], height, width)
    spare_ntk = _view(workspace[3], height, width)
    inverse = 1.0 / channels
    for i in range(height):
        for j in range(width):
            for k in range(height):
                row = nngp[i, j, k]
                for m in range(width):
                    total = 0.0
                    for c in range(channels):
                        total += a[i, j, c] * b[k, m, c]
                    row[m] = total * inverse
    ntk[...] = 0.0
    relu = 0
    step = 0
    nngp_out = 0.0
    ntk_out = 0.0
    while step < len(codes):
        code = codes[step]
        if code == CONV or code == RELU:
            scale, bias, tangent = 1.0, 0.0, 0.0  # a ReLU alone
            if code == CONV:
                _shift_sum(nngp, spare_nngp)
                _shift_sum(ntk, spare_ntk)
                nngp, spare_nngp = spare_nngp, nngp
                ntk, spare_ntk = spare_ntk, ntk
                scale, bias, tangent = w2s[step] / 9.0, b2s[step], 1.0
            if code == RELU or (step + 1 < len(codes) and codes[step + 1] == RELU):
                size = height * width
                map_a = var_a[offsets[relu] : offsets[relu] + size].reshape((height, width))
                map_b = var_b[offsets[relu] : offsets[relu] + size].reshape((height, width))
                if record:
                    for i in range(height):
                        for j in range(width):
                            map_a[i, j] = scale * nngp[i, j, i, j] + bias
                _affine_relu(nngp, ntk, scale, bias, tangent, map_a, map_b)
                relu += 1
                step += code == CONV  # the conv's ReLU is done too
            else:  # a conv whose output is not rectified
                flat_nngp, flat_ntk = nngp.reshape(-1), ntk.reshape(-1)
                for index in range(len(flat_nngp)):
                    flat_nngp[index] = scale * flat_nngp[index] + bias
                    flat_ntk[index] = flat_nngp[index] + scale * flat_ntk[index]
        elif code == POOL:
            height, width = height // 2, width // 2
            pooled_nngp = _view(spare_nngp.reshape(-1), height, width)
            pooled_ntk = _view(spare_ntk.reshape(-1), height, width)
            _pool(nngp, pooled_nngp)
            _pool(ntk, pooled_ntk)
            spare_nngp = _view(nngp.reshape(-1), height, width)
            spare_ntk = _view(ntk.reshape(-1), height, width)
            nngp, ntk = pooled_nngp, pooled_ntk
        elif code == GLOBAL_POOL:
            nngp_out = nngp.mean()
            ntk_out = ntk.mean()
            step += 1
            break
        elif code == FLATTEN:
            for i in range(height):
                for j in range(width):
                    nngp_out += nngp[i, j, i, j]
                    ntk_out += ntk[i, j, i, j]
            nngp_out /= height * width
            ntk_out /= height * width
            step += 1
            break
        step += 1
    return _dense_read_out(nngp_out, ntk_out, step, codes, w2s, b2s)


@jit(nogil=True, error_model="numpy")
def fold_one_pair_diagonal(
    a, b, var_a, var_b, offsets, codes, w2s, b2s, record, workspace
):  # pragma: no cover - compiled
    """As :func:`fold_one_pair` for a ``Flatten`` read-out without pooling: only the
    entries :math:`K(p, p)` (a conv maps them among themselves), (H, W) per pair."""
    height, width, channels = a.shape
    size = height * width
    nngp = workspace[0, :size].reshape((height, width))
    ntk = workspace[1, :size].reshape((height, width))
    sum_nngp = workspace[2, :size].reshape((height, width))
    sum_ntk = workspace[3, :size].reshape((height, width))
    inverse = 1.0 / channels
    for i in range(height):
        for j in range(width):
            total = 0.0
            for c in range(channels):
                total += a[i, j, c] * b[i, j, c]
            nngp[i, j] = total * inverse
    ntk[...] = 0.0
    relu = 0
    step = 0
    nngp_out = 0.0
    ntk_out = 0.0
    half_pi_inverse = 1.0 / (2.0 * np.pi)
    while step < len(codes):
        code = codes[step]
        if code == CONV or code == RELU:
            scale, bias, tangent = 1.0, 0.0, 0.0  # a ReLU alone
            if code == CONV:
                sum_nngp[...] = 0.0
                sum_ntk[...] = 0.0
                for dy in range(-1, 2):
                    for dx in range(-1, 2):
                        for i in range(max(0, -dy), min(height, height - dy)):
                            for j in range(max(0, -dx), min(width, width - dx)):
                                sum_nngp[i, j] += nngp[i + dy, j + dx]
                                sum_ntk[i, j] += ntk[i + dy, j + dx]
                nngp[...] = sum_nngp
                ntk[...] = sum_ntk
                scale, bias, tangent = w2s[step] / 9.0, b2s[step], 1.0
            if code == RELU or (step + 1 < len(codes) and codes[step + 1] == RELU):
                map_a = var_a[offsets[relu] : offsets[relu] + size].reshape((height, width))
                map_b = var_b[offsets[relu] : offsets[relu] + size].reshape((height, width))
                for i in range(height):
                    for j in range(width):
                        q = scale * nngp[i, j] + bias
                        if record:
                            map_a[i, j] = q
                        sine = np.sqrt(max(map_a[i, j] * map_b[i, j] - q * q, 0.0))
                        rest = np.pi - _angle(sine, q)
                        nngp[i, j] = max((sine + rest * q) * half_pi_inverse, 0.0)
                        ntk[i, j] = (tangent * q + scale * ntk[i, j]) * (rest * half_pi_inverse)
                relu += 1
                step += code == CONV  # the conv's ReLU is done too
            else:  # a conv whose output is not rectified
                for i in range(height):
                    for j in range(width):
                        nngp[i, j] = scale * nngp[i, j] + bias
                        ntk[i, j] = nngp[i, j] + scale * ntk[i, j]
        elif code == FLATTEN:
            nngp_out = nngp.mean()
            ntk_out = ntk.mean()
            step += 1
            break
        step += 1
    return _dense_read_out(nngp_out, ntk_out, step, codes, w2s, b2s)


@jit(nogil=True, error_model="numpy")
def fold_pairs(
    fold, images_a, images_b, rows, cols, variances_a, variances_b, encoded, nngp, ntk, workspace
):  # pragma: no cover - compiled
    """``nngp[p], ntk[p]`` of the pairs ``(images_a[rows[p]], images_b[cols[p]])`` by
    ``fold`` (:func:`fold_one_pair` or :func:`fold_one_pair_diagonal`); ``encoded`` is
    ``(offsets, codes, w2s, b2s)``. Releases the GIL: threads run it on disjoint pairs,
    each with its own ``workspace``."""
    offsets, codes, w2s, b2s = encoded
    for p in range(len(rows)):
        nngp[p], ntk[p] = fold(
            images_a[rows[p]],
            images_b[cols[p]],
            variances_a[rows[p]],
            variances_b[cols[p]],
            offsets,
            codes,
            w2s,
            b2s,
            False,
            workspace,
        )


@jit(nogil=True, error_model="numpy")
def self_variances(fold, images, variances, encoded, workspace):  # pragma: no cover - compiled
    """Each image's variances before each ReLU, into ``variances`` (n, total), by ``fold``
    on the pairs (x, x)."""
    offsets, codes, w2s, b2s = encoded
    for p in range(len(images)):
        fold(
            images[p],
            images[p],
            variances[p],
            variances[p],
            offsets,
            codes,
            w2s,
            b2s,
            True,
            workspace,
        )
