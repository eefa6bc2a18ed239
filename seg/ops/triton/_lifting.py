"""Triton kernels for LiftPool 2d: one lifting *stage* per launch.

A stage runs along one axis (W or H) of [B, C, H, W] tensors viewed as
[B, C, A, L] (A the other axis, L the lifting one) and computes, for each
output sample j of the n along L,

    out[j * o_step + o_off] = base[min(j * b_step + b_off, b_lim)] + SIGN * F(src)[j]

(written where ``j * o_step + o_off < o_lim``), where ``MODE`` says which F:

    LEARNED          F = tanh(mix(relu(dwconv(src))))        depthwise conv: K taps, reflect
                                                             (replicate on axes too short)
    HAAR_PREDICT     P(x_e)[j] = x_e[j]
    HAAR_UPDATE      U(d)[j]   = d[j] / 2
    LEGALL_PREDICT   P(x_e)[j] = (x_e[j] + x_e[j + 1]) / 2    the last sample repeated
    LEGALL_UPDATE    U(d)[j]   = (d[j - 1] + d[j]) / 4        the first sample repeated

``_stage_fwd_kernel`` runs a stage; its backward is ``_stage_bwd_mix_kernel``
(learned only: dL/dz and the 1x1 mix's gradients) then ``_stage_bwd_src_kernel``
(gradients of src and base, fp32 atomics, and of the depthwise conv). The
launchers, the stage lists and the op registration are in ``lifting.py``.

Programs: grid axis 0 carries (pixel tile, channel tile) pairs, axis 1 the
batch; a tile is [BLOCK_C channels, BLOCK_P pixels] in fp32 registers.
"""

from __future__ import annotations

import triton
import triton.language as tl

# The kernels' MODE: which F a stage applies (see the module doc). Triton reads
# module globals in a kernel only when they are tl.constexpr.
LEARNED = tl.constexpr(0)
HAAR_PREDICT = tl.constexpr(1)
HAAR_UPDATE = tl.constexpr(2)
LEGALL_PREDICT = tl.constexpr(3)
LEGALL_UPDATE = tl.constexpr(4)


@triton.jit
def _tanh(z):
    # odd-symmetric form: exp of a non-positive number never overflows
    t = tl.exp(-2.0 * tl.abs(z))
    y = (1.0 - t) / (1.0 + t)
    return tl.where(z < 0, -y, y)


@triton.jit
def _tap(j, t: tl.constexpr, n, PAD: tl.constexpr, REFLECT: tl.constexpr):
    """Index of tap t of a centred stencil at j on an axis of length n (reflect or replicate)."""
    i = j + (t - PAD)
    if REFLECT:
        i = tl.where(i < 0, -i, i)
        i = tl.where(i >= n, 2 * (n - 1) - i, i)
    else:
        i = tl.minimum(tl.maximum(i, 0), n - 1)
    return i


@triton.jit
def _tiles(A, n, BLOCK_P: tl.constexpr):
    """Grid axis 0 carries pixel tiles x channel tiles (axis 0 allows 2^31 - 1 programs;
    axes 1 and 2 only 65535): (pixel tile, channel tile) of this program."""
    pixel_tiles = tl.cdiv(A * n, BLOCK_P)
    pid = tl.program_id(0)
    return pid % pixel_tiles, pid // pixel_tiles


@triton.jit
def _channels(first, BLOCK_C: tl.constexpr):
    """Channel indices in int64: ``channel * stride`` passes 2^31 on large tensors."""
    return tl.arange(0, BLOCK_C).to(tl.int64) + first


@triton.jit
def _pixels(pid, A, n, A_FASTEST: tl.constexpr, BLOCK_P: tl.constexpr):
    """Flat pixel p -> (other-axis index a, lifting index j), both int64 for the offsets."""
    p = pid.to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P).to(tl.int64)
    if A_FASTEST:  # the lifting axis is H: neighbouring lanes walk along W
        a = p % A
        j = p // A
    else:  # the lifting axis is W: neighbouring lanes walk along it
        j = p % n
        a = p // n
    return p, a, j, p < A * n


@triton.jit
def _hidden(src_ptr, s_sc, s_sa, s_sl, ci, cmask, a, j, pmask, n, dw_ptr, db_ptr,
            K: tl.constexpr, REFLECT: tl.constexpr, BLOCK_C: tl.constexpr,
            BLOCK_P: tl.constexpr):  # fmt: skip
    """Depthwise conv of src (fp32 [BLOCK_C, BLOCK_P]) before the ReLU."""
    bias = tl.load(db_ptr + ci, mask=cmask, other=0.0).to(tl.float32)
    h = tl.zeros([BLOCK_C, BLOCK_P], tl.float32) + bias[:, None]
    mask = cmask[:, None] & pmask[None, :]
    for t in tl.static_range(K):
        i = _tap(j, t, n, K // 2, REFLECT)
        v = tl.load(
            src_ptr + ci[:, None] * s_sc + (a * s_sa + i * s_sl)[None, :], mask=mask, other=0.0
        )
        w = tl.load(dw_ptr + ci * K + t, mask=cmask, other=0.0).to(tl.float32)
        h += w[:, None] * v.to(tl.float32)
    return h


@triton.jit
def _relu(h):
    """ReLU that keeps NaN (tl.maximum would turn it into 0 and hide it from the NaN guard)."""
    return tl.where(h < 0.0, 0.0, h)


@triton.jit
def _mix(src_ptr, s_sc, s_sa, s_sl, co, comask, a, j, pmask, n, C,
         dw_ptr, db_ptr, mw_ptr, mb_ptr,
         K: tl.constexpr, REFLECT: tl.constexpr, BLOCK_C: tl.constexpr,
         BLOCK_P: tl.constexpr):  # fmt: skip
    """Pre-Tanh output of the learned predictor for output channels co: [BLOCK_C, BLOCK_P]."""
    acc = tl.zeros([BLOCK_C, BLOCK_P], tl.float32)
    for c0 in range(0, C, BLOCK_C):
        ci = _channels(c0, BLOCK_C)
        cimask = ci < C
        h = _hidden(src_ptr, s_sc, s_sa, s_sl, ci, cimask, a, j, pmask, n, dw_ptr, db_ptr,
                    K, REFLECT, BLOCK_C, BLOCK_P)  # fmt: skip
        r = tl.where(cimask[:, None] & pmask[None, :], _relu(h), 0.0)
        m = tl.load(mw_ptr + co[:, None] * C + ci[None, :],
                    mask=comask[:, None] & cimask[None, :], other=0.0)  # fmt: skip
        acc += tl.dot(m.to(tl.float32), r, input_precision="ieee")
    bias = tl.load(mb_ptr + co, mask=comask, other=0.0).to(tl.float32)
    return acc + bias[:, None]


@triton.jit
def _fixed(src_ptr, s_sc, s_sa, s_sl, c, cmask, a, j, pmask, n, MODE: tl.constexpr):
    """haar / legall53 P or U at j (MODE other than LEARNED): [BLOCK_C, BLOCK_P] in fp32."""
    mask = cmask[:, None] & pmask[None, :]
    rows = src_ptr + c[:, None] * s_sc + (a * s_sa)[None, :]
    here = tl.load(rows + (j * s_sl)[None, :], mask=mask, other=0.0).to(tl.float32)
    if MODE == HAAR_PREDICT:  # x_e[j]
        f = here
    elif MODE == HAAR_UPDATE:  # d[j] / 2
        f = 0.5 * here
    elif MODE == LEGALL_PREDICT:  # (x_e[j] + x_e[j + 1]) / 2
        nxt = tl.minimum(j + 1, n - 1)
        f = 0.5 * (here + tl.load(rows + (nxt * s_sl)[None, :], mask=mask, other=0.0))
    else:  # LEGALL_UPDATE: (d[j - 1] + d[j]) / 4
        prv = tl.maximum(j - 1, 0)
        f = 0.25 * (here + tl.load(rows + (prv * s_sl)[None, :], mask=mask, other=0.0))
    return f


@triton.jit
def _stage_fwd_kernel(
    src_ptr, s_sb, s_sc, s_sa, s_sl,
    base_ptr, b_sb, b_sc, b_sa, b_sl, b_step, b_off, b_lim,
    out_ptr, o_sb, o_sc, o_sa, o_sl, o_step, o_off, o_lim,
    dw_ptr, db_ptr, mw_ptr, mb_ptr,
    C, A, n,
    SIGN: tl.constexpr, MODE: tl.constexpr, K: tl.constexpr, REFLECT: tl.constexpr,
    A_FASTEST: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    """out[b, c, a, j*o_step+o_off] = base[b, c, a, min(j*b_step+b_off, b_lim)] + SIGN * F(src)[j],
    written where j*o_step+o_off < o_lim."""
    b = tl.program_id(1).to(tl.int64)
    pixel_tile, channel_tile = _tiles(A, n, BLOCK_P)
    p, a, j, pmask = _pixels(pixel_tile, A, n, A_FASTEST, BLOCK_P)
    co = _channels(channel_tile * BLOCK_C, BLOCK_C)
    cmask = co < C
    src = src_ptr + b * s_sb
    if MODE == LEARNED:
        z = _mix(src, s_sc, s_sa, s_sl, co, cmask, a, j, pmask, n, C,
                 dw_ptr, db_ptr, mw_ptr, mb_ptr, K, REFLECT, BLOCK_C, BLOCK_P)  # fmt: skip
        f = _tanh(z)
    else:
        f = _fixed(src, s_sc, s_sa, s_sl, co, cmask, a, j, pmask, n, MODE)
    mask = cmask[:, None] & pmask[None, :]
    bl = tl.minimum(j * b_step + b_off, b_lim)
    base = tl.load(base_ptr + b * b_sb + co[:, None] * b_sc + (a * b_sa + bl * b_sl)[None, :],
                   mask=mask, other=0.0)  # fmt: skip
    out = base.to(tl.float32) + SIGN * f
    ol = j * o_step + o_off
    omask = mask & (ol < o_lim)[None, :]
    tl.store(out_ptr + b * o_sb + co[:, None] * o_sc + (a * o_sa + ol * o_sl)[None, :],
             out.to(out_ptr.dtype.element_ty), mask=omask)  # fmt: skip


@triton.jit
def _stage_bwd_mix_kernel(
    src_ptr, s_sb, s_sc, s_sa, s_sl,
    g_ptr, g_sb, g_sc, g_sa, g_sl, o_step, o_off, o_lim,
    gz_ptr, dw_ptr, db_ptr, mw_ptr, mb_ptr, gmw_ptr, gmb_ptr,
    C, A, n,
    SIGN: tl.constexpr, K: tl.constexpr, REFLECT: tl.constexpr,
    A_FASTEST: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    """Learned stage, part 1: dL/dz = SIGN * g * (1 - tanh(z)^2) into gz [B, C, A*n];
    dL/dmix_bias and dL/dmix_weight (= dL/dz @ relu(h)^T) accumulated atomically."""
    b = tl.program_id(1).to(tl.int64)
    pixel_tile, channel_tile = _tiles(A, n, BLOCK_P)
    p, a, j, pmask = _pixels(pixel_tile, A, n, A_FASTEST, BLOCK_P)
    co = _channels(channel_tile * BLOCK_C, BLOCK_C)
    comask = co < C
    src = src_ptr + b * s_sb
    z = _mix(src, s_sc, s_sa, s_sl, co, comask, a, j, pmask, n, C,
             dw_ptr, db_ptr, mw_ptr, mb_ptr, K, REFLECT, BLOCK_C, BLOCK_P)  # fmt: skip
    f = _tanh(z)
    ol = j * o_step + o_off
    mask = comask[:, None] & (pmask & (ol < o_lim))[None, :]
    g = tl.load(g_ptr + b * g_sb + co[:, None] * g_sc + (a * g_sa + ol * g_sl)[None, :],
                mask=mask, other=0.0).to(tl.float32)  # fmt: skip
    gz = tl.where(mask, SIGN * g * (1.0 - f * f), 0.0)
    tl.store(gz_ptr + (b * C + co[:, None]) * (A * n) + p[None, :], gz,
             mask=comask[:, None] & pmask[None, :])  # fmt: skip
    tl.atomic_add(gmb_ptr + co, tl.sum(gz, axis=1), mask=comask)
    for c0 in range(0, C, BLOCK_C):
        ci = _channels(c0, BLOCK_C)
        cimask = ci < C
        h = _hidden(src, s_sc, s_sa, s_sl, ci, cimask, a, j, pmask, n, dw_ptr, db_ptr,
                    K, REFLECT, BLOCK_C, BLOCK_P)  # fmt: skip
        r = tl.where(cimask[:, None] & pmask[None, :], _relu(h), 0.0)
        gm = tl.dot(gz, tl.trans(r), input_precision="ieee")
        tl.atomic_add(gmw_ptr + co[:, None] * C + ci[None, :], gm,
                      mask=comask[:, None] & cimask[None, :])  # fmt: skip


@triton.jit
def _stage_bwd_src_kernel(
    src_ptr, s_sb, s_sc, s_sa, s_sl,
    gs_ptr, gs_sb, gs_sc, gs_sa, gs_sl,
    gb_ptr, gb_sb, gb_sc, gb_sa, gb_sl, b_step, b_off, b_lim,
    g_ptr, g_sb, g_sc, g_sa, g_sl, o_step, o_off, o_lim,
    gz_ptr, dw_ptr, db_ptr, mw_ptr, gdw_ptr, gdb_ptr,
    C, A, n,
    SIGN: tl.constexpr, MODE: tl.constexpr, K: tl.constexpr, REFLECT: tl.constexpr,
    A_FASTEST: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    """Stage backward into src and base (fp32 buffers, atomics), and the depthwise weights."""
    b = tl.program_id(1).to(tl.int64)
    pixel_tile, channel_tile = _tiles(A, n, BLOCK_P)
    p, a, j, pmask = _pixels(pixel_tile, A, n, A_FASTEST, BLOCK_P)
    c = _channels(channel_tile * BLOCK_C, BLOCK_C)
    cmask = c < C
    mask = cmask[:, None] & pmask[None, :]
    ol = j * o_step + o_off
    gmask = mask & (ol < o_lim)[None, :]
    g = tl.load(g_ptr + b * g_sb + c[:, None] * g_sc + (a * g_sa + ol * g_sl)[None, :],
                mask=gmask, other=0.0).to(tl.float32)  # fmt: skip
    # base: identity
    bl = tl.minimum(j * b_step + b_off, b_lim)
    tl.atomic_add(gb_ptr + b * gb_sb + c[:, None] * gb_sc + (a * gb_sa + bl * gb_sl)[None, :],
                  g, mask=gmask)  # fmt: skip
    gsrc = gs_ptr + b * gs_sb + c[:, None] * gs_sc + (a * gs_sa)[None, :]
    if MODE == LEARNED:
        # dL/drelu(h) = mix_weight^T @ dL/dz, over blocks of output channels
        gr = tl.zeros([BLOCK_C, BLOCK_P], tl.float32)
        for c0 in range(0, C, BLOCK_C):
            co = _channels(c0, BLOCK_C)
            comask = co < C
            mt = tl.load(mw_ptr + co[None, :] * C + c[:, None],
                         mask=cmask[:, None] & comask[None, :], other=0.0)  # fmt: skip
            gz = tl.load(gz_ptr + (b * C + co[:, None]) * (A * n) + p[None, :],
                         mask=comask[:, None] & pmask[None, :], other=0.0)  # fmt: skip
            gr += tl.dot(mt.to(tl.float32), gz, input_precision="ieee")
        src = src_ptr + b * s_sb
        h = _hidden(src, s_sc, s_sa, s_sl, c, cmask, a, j, pmask, n, dw_ptr, db_ptr,
                    K, REFLECT, BLOCK_C, BLOCK_P)  # fmt: skip
        gh = tl.where(mask & (h > 0.0), gr, 0.0)
        tl.atomic_add(gdb_ptr + c, tl.sum(gh, axis=1), mask=cmask)
        for t in tl.static_range(K):
            i = _tap(j, t, n, K // 2, REFLECT)
            v = tl.load(src + c[:, None] * s_sc + (a * s_sa + i * s_sl)[None, :], mask=mask,
                        other=0.0).to(tl.float32)  # fmt: skip
            tl.atomic_add(gdw_ptr + c * K + t, tl.sum(gh * v, axis=1), mask=cmask)
            w = tl.load(dw_ptr + c * K + t, mask=cmask, other=0.0).to(tl.float32)
            tl.atomic_add(gsrc + (i * gs_sl)[None, :], w[:, None] * gh, mask=mask)
    elif MODE == HAAR_PREDICT:  # the transposed stencils of _fixed
        tl.atomic_add(gsrc + (j * gs_sl)[None, :], SIGN * g, mask=mask)
    elif MODE == HAAR_UPDATE:
        tl.atomic_add(gsrc + (j * gs_sl)[None, :], (SIGN * 0.5) * g, mask=mask)
    elif MODE == LEGALL_PREDICT:
        half = (SIGN * 0.5) * g
        tl.atomic_add(gsrc + (j * gs_sl)[None, :], half, mask=mask)
        tl.atomic_add(gsrc + (tl.minimum(j + 1, n - 1) * gs_sl)[None, :], half, mask=mask)
    else:  # LEGALL_UPDATE
        quarter = (SIGN * 0.25) * g
        tl.atomic_add(gsrc + (j * gs_sl)[None, :], quarter, mask=mask)
        tl.atomic_add(gsrc + (tl.maximum(j - 1, 0) * gs_sl)[None, :], quarter, mask=mask)
