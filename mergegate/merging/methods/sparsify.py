"""Sparsification of task vectors (mergekit 0.1.5 ``sparsify.py`` semantics, faster kernels).

Four methods, named as mergekit names them:

* ``magnitude`` (TIES): keep the ``k = max(1, int(density * numel))`` largest ``|delta|``.
* ``random`` (DARE): keep each element with probability ``density``.
* ``magnitude_outliers`` (Model Breadcrumbs): drop the ``int(gamma * numel)`` largest and enough of
  the smallest ``|delta|`` to keep ``int(density * numel)`` elements (0.1.5 semantics, so
  ``gamma = 0`` keeps the top ``density`` fraction).
* ``della_magprune`` (DELLA): per row, keep element with probability
  ``(density - epsilon) + 2 * epsilon * rank_norm`` where ``rank_norm`` in [0, 1] is the ascending
  magnitude rank in that row.

With ``rescale`` the kept elements are multiplied by ``||delta||_1 / ||masked||_1`` (mergekit's
``RescaleNorm.l1``), unless either norm is below 1e-7. The norms and their ratio are rounded to
mergekit's "work dtype" (the compute dtype, except float32 for float16 on CPU for the
stochastic methods) so the factor matches mergekit's. The deterministic sparsifiers take the norms
exactly as mergekit does (``abs().sum()`` in that dtype); the stochastic ones, whose masks differ
from mergekit's anyway, use fused or per-chunk sums (see below).

How this differs from mergekit's code, and why the results still match:

* Rank thresholds are found with an O(n) radix select on the bit patterns of ``|delta|`` (one
  2**15-bin ``bincount`` for 16-bit floats, two levels for float32, ``torch.kthvalue`` for
  float64) instead of a full ``argsort``; top-k masking is then one ``hardshrink``. Exactly the
  requested number of elements is kept. Among elements whose magnitude equals the threshold the
  choice is deterministic and positional (ties are ranked in memory order); mergekit's unstable
  argsort keeps an arbitrary subset of them. That is the one documented difference.
* The DARE mask is drawn from random bytes (eight per 64-bit word of ``Tensor.random_``), with
  a float64 draw for the ~1/256 of elements that land exactly on the threshold byte, so
  ``P(keep) = density`` exactly. It is several times cheaper than ``torch.rand`` on CPU and uses
  only the supplied ``torch.Generator`` (same seed, same mask). It is not mergekit's
  random stream: a DARE merge is reproducible within mergegate, not bit-identical to mergekit's.
  On CPU the whole DARE step is fused per ``DARE_CHUNK`` elements (``random_delta``): subtract,
  L1 before, that chunk's bytes, mask (integer ops: dropped elements become +0.0), L1 after, on a
  cache-resident chunk; the draws are sequential chunk after chunk, so the mask depends on the
  seed only. The L1 norms are sums of per-chunk partial sums (the tensor dtype's own ``sum``,
  float32 for float16), which is as exact as the single rounding of the work-dtype factor needs.
* DELLA ranks come from one ``argsort`` plus a scatter (the inverse permutation) instead of two
  ``argsort`` calls; the keep draw is ``rand < p`` from the generator instead of
  ``torch.bernoulli(p)`` from the global RNG. A row of one element (mergekit: 0/0) gets
  ``p = density - epsilon``.
* A float16 L1 norm that overflows is redone in float32 (mergekit rescales by inf/inf = NaN).
* DELLA's invalid ``epsilon`` raises ``ConfigError(field="epsilon")`` instead of ``ValueError``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from mergegate.errors import ConfigError

METHODS = ("magnitude", "random", "magnitude_outliers", "della_magprune")
RESCALE_EPS = 1e-7
_HALF = (torch.float16, torch.bfloat16)


@dataclass
class Sparsified:
    """A sparsified task vector: ``delta`` (masked, same dtype) times ``scale`` (None = 1)."""

    delta: torch.Tensor
    scale: float | None = None

    def materialize(self) -> torch.Tensor:
        return self.delta if self.scale is None else self.delta * self.scale


# --------------------------------------------------------------------------------------------
# rank selection


def _bincount(values: torch.Tensor, bins: int) -> torch.Tensor:
    return torch.bincount(values.reshape(-1), minlength=bins)


def _locate(hist: torch.Tensor, rank: int) -> tuple[int, int, int]:
    """Bucket holding ascending ``rank`` (0-based): (bucket, count below it, count in it)."""
    cum = torch.cumsum(hist, 0)
    bucket = int(torch.searchsorted(cum, torch.tensor([rank], device=cum.device), right=True)[0])
    count = int(hist[bucket])
    below = int(cum[bucket]) - count
    return bucket, below, count


TIE_CHUNK = 1 << 22


@dataclass
class RankSelection:
    """The magnitude at one ascending rank of a tensor: ``value`` (0-dim, the tensor's dtype),
    ``below`` (count of smaller magnitudes), ``equal`` (count of ties, ``value`` included)."""

    value: torch.Tensor
    below: int
    equal: int
    _key: torch.Tensor  # a flat tensor whose elements equal _target exactly at the ties ...
    _target: object
    _positions: torch.Tensor | None = None  # ... or the tie positions themselves

    def ties(self, start: int, stop: int) -> torch.Tensor:
        """Positions (flat, memory order) of the ties numbered [start, stop) in memory order."""
        if stop <= start:
            return torch.empty(0, dtype=torch.long, device=self._key.device)
        if self._positions is not None:
            return self._positions[start:stop]
        found, seen = [], 0
        for offset in range(0, self._key.numel(), TIE_CHUNK):
            pos = torch.nonzero(self._key[offset:offset + TIE_CHUNK] == self._target).reshape(-1)
            if pos.numel() and seen + pos.numel() > start:
                found.append(pos[max(0, start - seen):stop - seen] + offset)
            seen += pos.numel()
            if seen >= stop:
                break
        return torch.cat(found) if found else torch.empty(0, dtype=torch.long, device=self._key.device)


def rank_value(t: torch.Tensor, rank: int) -> RankSelection:
    """The magnitude of ``t`` (no NaN; the sign is ignored) at ascending ``rank`` (0-based).
    O(n): a radix select on the bit patterns (a float's magnitude bits sort like an integer)."""
    flat = t.reshape(-1)
    if flat.dtype in _HALF:
        bits = flat.view(torch.int16) & 0x7FFF
        bucket, below, count = _locate(_bincount(bits, 1 << 15), rank)
        value = torch.tensor([bucket], dtype=torch.int16, device=flat.device).view(flat.dtype)[0]
        return RankSelection(value, below, count, bits, bucket)
    if flat.dtype == torch.float32 and sys.byteorder == "little":
        halves = flat.view(torch.int16)  # [low, high] 16-bit halves of each float
        high = halves[1::2] & 0x7FFF  # the magnitude's top 15 bits (a contiguous copy)
        hb, below_hi, _ = _locate(_bincount(high, 1 << 15), rank)
        idx = torch.nonzero(high == hb).reshape(-1)  # (much faster than masked_select)
        del high
        low = halves[0::2][idx].to(torch.int32) & 0xFFFF
        lb, below_lo, count = _locate(_bincount(low, 1 << 16), rank - below_hi)
        value = torch.tensor([(hb << 16) | lb], dtype=torch.int32, device=flat.device).view(torch.float32)[0]
        return RankSelection(value, below_hi + below_lo, count, idx, None, idx[low == lb])
    mag = flat.abs()
    value = torch.kthvalue(mag, rank + 1).values
    return RankSelection(value, int((mag < value).sum()), int((mag == value).sum()), mag, value)


def rank_range_mask(mag: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Bool mask of the elements whose ascending magnitude rank is in [start, stop): exactly
    ``stop - start`` of them; ties at a boundary are ranked in memory order."""
    n = mag.numel()
    start, stop = max(0, start), min(n, stop)
    if stop <= start:
        return torch.zeros(mag.shape, dtype=torch.bool, device=mag.device)
    if start == 0 and stop == n:
        return torch.ones(mag.shape, dtype=torch.bool, device=mag.device)
    hi = None if stop == n else rank_value(mag, stop - 1)
    lo = None if start == 0 else rank_value(mag, start)
    if lo is not None and hi is not None and bool(lo.value == hi.value):
        mask = torch.zeros(mag.shape, dtype=torch.bool, device=mag.device)
        mask.view(-1)[lo.ties(start - lo.below, stop - lo.below)] = True
        return mask
    lo_all = lo is None or lo.below == start  # every tie at the low boundary is in range
    hi_all = hi is None or hi.below + hi.equal == stop  # every tie at the high boundary is in range
    mask = None
    if lo is not None:
        mask = mag >= lo.value if lo_all else mag > lo.value
    if hi is not None:
        upper = mag <= hi.value if hi_all else mag < hi.value
        mask = upper if mask is None else mask.logical_and_(upper)
    if not lo_all:
        mask.view(-1)[lo.ties(start - lo.below, lo.equal)] = True
    if not hi_all:
        mask.view(-1)[hi.ties(0, stop - hi.below)] = True
    return mask


def topk_mask(mag: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of exactly ``k`` largest elements (ties at the threshold: ranked in memory order)."""
    return rank_range_mask(mag, mag.numel() - k, mag.numel())


# --------------------------------------------------------------------------------------------
# random masks


def _uniform_bytes(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """``n`` independent uniform uint8 values, eight per 64-bit random word."""
    gen_device = generator.device if generator is not None else device
    words = torch.empty((n + 7) // 8, dtype=torch.int64, device=gen_device)
    words.random_(-(2**63), None, generator=generator)
    out = words.view(torch.uint8)[:n]
    return out if out.device == device else out.to(device)


def bernoulli_mask(
    shape: torch.Size | tuple[int, ...], p: float, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Bool mask, each element True with probability ``p``, drawn from ``generator``.

    Two levels: one random byte per element decides all but the 1/256 of elements whose byte
    equals ``floor(256 p)``; those draw a float64 uniform against the fractional part. So
    ``P(keep) = floor(256 p)/256 + frac/256 = p`` (to float64 precision), with 8 random bits per
    element instead of the 32 of ``torch.rand``.
    """
    n = 1
    for s in shape:
        n *= int(s)
    if p >= 1:
        return torch.ones(shape, dtype=torch.bool, device=device)
    if p <= 0:
        return torch.zeros(shape, dtype=torch.bool, device=device)
    scaled = p * 256.0
    hi = int(scaled)  # 0..255
    frac = scaled - hi
    u = _uniform_bytes(n, generator, device)
    keep = u < hi
    if frac > 0:
        tie = torch.nonzero(u == hi).reshape(-1)
        if tie.numel():
            gen_device = generator.device if generator is not None else device
            extra = torch.rand(tie.numel(), generator=generator, dtype=torch.float64, device=gen_device)
            keep[tie[(extra < frac).to(device)]] = True
    return keep.reshape(shape)


# --------------------------------------------------------------------------------------------
# rescaling


def _work_dtype(t: torch.Tensor) -> torch.dtype:
    """mergekit's work dtype for the stochastic sparsifiers: the tensor dtype on accelerators
    and for bfloat16, float32 otherwise on CPU (float64 stays float64 here)."""
    if t.device.type != "cpu" or t.dtype in (torch.bfloat16, torch.float64):
        return t.dtype
    return torch.float32


def _round(x: float | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).to(dtype)
    return torch.tensor(x, dtype=torch.float64).to(dtype)


def l1_norm(t: torch.Tensor, work_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``||t||_1`` as mergekit computes it (``t.to(work_dtype).abs().sum()``, a 0-dim tensor), except
    that a float16 sum that overflows is redone in float32."""
    work = work_dtype or t.dtype
    norm = t.abs().sum() if work == t.dtype else t.abs().sum(dtype=work)
    if not bool(torch.isfinite(norm)) and work != torch.float64:
        norm = t.abs().sum(dtype=torch.float32)
    return norm


NORM_CHUNK = 1 << 20


def l1_norm_chunked(t: torch.Tensor) -> torch.Tensor:
    """``||t||_1`` as a 0-dim float64 tensor, for the stochastic sparsifiers (whose masks are not
    mergekit's anyway): one fused reduction, or for float16 a float32 sum per chunk through one
    reused buffer (no full-size temporary, no float16 overflow)."""
    flat = t.reshape(-1)
    if t.dtype != torch.float16:
        # one fused |x|-sum kernel (float accumulation inside); float16 could overflow its result
        return torch.linalg.vector_norm(flat, 1).to(torch.float64)
    n = flat.numel()
    acc = torch.float32
    buf = torch.empty(min(n, NORM_CHUNK), dtype=t.dtype, device=t.device)
    total = torch.zeros((), dtype=torch.float64, device=t.device)
    for start in range(0, n, NORM_CHUNK):
        chunk = flat[start:start + NORM_CHUNK]
        b = buf[: chunk.numel()]
        torch.abs(chunk, out=b)
        total += b.sum(dtype=acc)
    return total


def l1_rescale_factor(before: torch.Tensor, after: torch.Tensor, work_dtype: torch.dtype) -> float | None:
    """``before / after`` rounded as mergekit rounds it, or None when either norm is < 1e-7."""
    b, a = _round(before, work_dtype), _round(after, work_dtype)
    if not (bool(torch.isfinite(b)) and bool(torch.isfinite(a))):
        # float16 norms overflow (mergekit then writes NaN): use the ratio of the float32 norms
        b, a = _round(before, torch.float32), _round(after, torch.float32)
        if float(b) < RESCALE_EPS or float(a) < RESCALE_EPS:
            return None
        return float(_round(b / a, work_dtype))
    if float(b) < RESCALE_EPS or float(a) < RESCALE_EPS:
        return None
    return float(b / a)


# --------------------------------------------------------------------------------------------
# the sparsifiers. Each takes a task vector it may overwrite (``inplace``) and returns Sparsified.


def _own(delta: torch.Tensor, inplace: bool) -> torch.Tensor:
    return delta if inplace else delta.clone()


def _apply_mask(delta: torch.Tensor, keep: torch.Tensor, rescale: bool, work_dtype: torch.dtype,
                inplace: bool, exact_norm: bool = False) -> Sparsified:
    """Mask and, with ``rescale``, the L1 factor: with mergekit's own norm (``exact_norm``, for
    the deterministic sparsifiers) or the chunked float32/float64 one (stochastic ones)."""
    norm = (lambda t: l1_norm(t, work_dtype)) if exact_norm else l1_norm_chunked
    before = norm(delta) if rescale else None
    out = _own(delta, inplace).mul_(keep.view(torch.uint8))  # uint8 multiplies faster than bool
    if not rescale:
        return Sparsified(out)
    return Sparsified(out, l1_rescale_factor(before, norm(out), work_dtype))


_INT_VIEW = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32,
             torch.float64: torch.int64}


def _below(value: torch.Tensor) -> float:
    """The largest number of ``value``'s dtype smaller than the non-negative ``value`` (-1 for 0),
    so that ``hardshrink(x, _below(v))`` keeps exactly ``|x| >= v``."""
    bits = int(value.reshape(1).view(_INT_VIEW[value.dtype])[0])
    if bits == 0:
        return -1.0
    prev = torch.tensor([bits - 1], dtype=_INT_VIEW[value.dtype]).view(value.dtype)
    return float(prev[0])


def magnitude(delta: torch.Tensor, density: float, *, rescale: bool = False, inplace: bool = False) -> Sparsified:
    if density >= 1:
        return Sparsified(delta)
    n = delta.numel()
    if density <= 0 or n == 0:
        return Sparsified(torch.zeros_like(delta))
    k = max(1, int(density * n))
    if k >= n:
        return Sparsified(delta)
    start = n - k  # keep the ascending magnitude ranks [n - k, n)
    sel = rank_value(delta, start)
    before = l1_norm(delta) if rescale else None
    surplus = (n - sel.below) - k  # n - below elements have |x| >= value: the surplus are ties to drop
    drop = sel.ties(0, surplus) if surplus > 0 and float(sel.value) > 0 else None
    out = _own(delta, inplace)
    torch.hardshrink(out, _below(sel.value), out=out)  # keeps |x| >= value
    if drop is not None:
        out.view(-1)[drop] = 0
    if not rescale:
        return Sparsified(out)
    return Sparsified(out, l1_rescale_factor(before, l1_norm(out), delta.dtype))


def magnitude_outliers(delta: torch.Tensor, density: float, gamma: float = 0.01, *, rescale: bool = False,
                       inplace: bool = False) -> Sparsified:
    if density >= 1:
        return Sparsified(delta)
    n = delta.numel()
    target = int(density * n)
    n_top = int(gamma * n)
    n_bot = max(0, n - target - n_top)
    if target <= 0 or n == 0:
        keep = torch.zeros(delta.shape, dtype=torch.bool, device=delta.device)
    else:
        keep = rank_range_mask(delta.abs(), n_bot, n_bot + target)
    return _apply_mask(delta, keep, rescale, delta.dtype, inplace, exact_norm=True)


DARE_CHUNK = 1 << 20  # elements per fused DARE step: the chunk and its mask stay in cache


def _fused_ok(t: torch.Tensor, generator: torch.Generator | None) -> bool:
    return (t.device.type == "cpu" and t.dtype in _INT_VIEW and t.is_contiguous()
            and (generator is None or generator.device.type == "cpu"))


def _abs_into(chunk: torch.Tensor, buf: torch.Tensor) -> torch.Tensor:
    """``|chunk|`` written into ``buf`` (same dtype) by clearing the sign bit (cheaper than abs)."""
    ity = _INT_VIEW[chunk.dtype]
    mask = (1 << (torch.iinfo(ity).bits - 1)) - 1
    torch.bitwise_and(chunk.view(ity), mask, out=buf.view(ity))
    return buf


def random_delta(x: torch.Tensor, base: torch.Tensor | None, density: float, *, rescale: bool = False,
                 generator: torch.Generator | None = None, out: torch.Tensor | None = None) -> Sparsified:
    """DARE on the task vector ``x - base`` (``base`` None: ``x`` is the task vector), fused per
    ``DARE_CHUNK`` elements: subtract, L1 before, the chunk's random bytes, mask, L1 after, all on
    an L2-resident chunk written once into ``out`` (allocated when None; may be ``x``).

    The mask is ``bernoulli_mask``'s two-level byte draw, done chunk by chunk from ``generator``
    (deterministic: the chunks and the draws are sequential), except that density 1/2 takes one
    random bit per element (bit r of byte j decides the chunk's element ``r * bytes + j``), which
    is exact too and 8x fewer draws. CPU tensors only (``_fused_ok``)."""
    flat_x = x.reshape(-1)
    n = flat_x.numel()
    if out is None:
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    dst = out.view(-1)
    flat_b = None if base is None else base.reshape(-1)
    scaled = density * 256.0
    hi = int(scaled)  # 0..255
    frac = scaled - hi
    step = min(DARE_CHUNK, ((n + 7) // 8) * 8) or 8
    words = torch.empty(step // 8, dtype=torch.int64)
    ubytes = words.view(torch.uint8)
    ity = _INT_VIEW[x.dtype]
    shift = torch.iinfo(ity).bits - 1
    keep = torch.empty(step, dtype=ity)  # per element: all ones (keep) or 0 (drop)
    buf = torch.empty(step, dtype=x.dtype) if rescale else None
    half = hi == 128 and frac == 0  # density 1/2: one random bit per element instead of a byte
    if half:
        words = torch.empty((step // 8 + 7) // 8, dtype=torch.int64)
        ubytes = words.view(torch.uint8)
        spread = torch.empty((1, step // 8), dtype=ity)
        # row i of the (8, bytes) mask takes bit i of each byte to the sign position
        shifts = (shift - torch.arange(8, dtype=torch.int64)).to(ity).view(8, 1)
    acc = torch.float32 if x.dtype == torch.float16 else None  # float16 partial sums could overflow
    before, after = [], []
    for start in range(0, n, step):
        stop = min(n, start + step)
        c = stop - start
        d = dst[start:stop]
        if flat_b is not None:
            torch.sub(flat_x[start:stop], flat_b[start:stop], out=d)
        elif d.data_ptr() != flat_x.data_ptr() + start * flat_x.element_size():
            d.copy_(flat_x[start:stop])
        if rescale:
            before.append(_abs_into(d, buf[:c]).sum(dtype=acc))
        k = keep[:c]
        if half:
            nb = (c + 7) // 8  # element r * nb + j of the chunk keeps when bit r of byte j is set
            words[: (nb + 7) // 8].random_(-(2**63), None, generator=generator)
            b = spread[:, :nb]
            b.view(-1).copy_(ubytes[:nb])
            kk = keep[: 8 * nb]
            torch.bitwise_left_shift(b, shifts, out=kk.view(8, nb))
            kk.bitwise_right_shift_(shift)
            d.view(ity).bitwise_and_(k)
            if rescale:
                after.append(_abs_into(d, buf[:c]).sum(dtype=acc))
            continue
        w = words[: (c + 7) // 8]
        w.random_(-(2**63), None, generator=generator)
        u = ubytes[:c]
        # keep = u < hi as a bit mask, with integer ops only (several times cheaper than a bool
        # compare and a multiply): u - hi is negative exactly when kept; >> shift spreads its sign
        k.copy_(u)
        k.sub_(hi)
        if frac > 0:
            tie = torch.nonzero(k == 0).reshape(-1)  # u == hi: the second level decides
            if tie.numel():
                extra = torch.rand(tie.numel(), generator=generator, dtype=torch.float64)
                k[tie[extra < frac]] = -1
        k.bitwise_right_shift_(shift)
        d.view(ity).bitwise_and_(k)  # dropped elements become +0.0
        if rescale:
            after.append(_abs_into(d, buf[:c]).sum(dtype=acc))
    if not rescale:
        return Sparsified(out)
    b = torch.stack(before).to(torch.float64).sum() if before else torch.zeros((), dtype=torch.float64)
    a = torch.stack(after).to(torch.float64).sum() if after else torch.zeros((), dtype=torch.float64)
    return Sparsified(out, l1_rescale_factor(b, a, _work_dtype(x)))


def random(delta: torch.Tensor, density: float, *, rescale: bool = False, generator: torch.Generator | None = None,
           inplace: bool = False) -> Sparsified:
    if density >= 1:
        return Sparsified(delta)
    if density > 0 and _fused_ok(delta, generator):
        return random_delta(delta, None, density, rescale=rescale, generator=generator,
                            out=delta if inplace else None)
    keep = bernoulli_mask(delta.shape, density, generator, delta.device)
    return _apply_mask(delta, keep, rescale, _work_dtype(delta), inplace)


def check_della(density: float, epsilon: float) -> None:
    if 0 < density < 1 and (density + epsilon >= 1 or density - epsilon <= 0):
        raise ConfigError(
            f"DELLA needs density +/- epsilon inside (0, 1); got density={density}, epsilon={epsilon}",
            field="epsilon",
            hint="choose epsilon < min(density, 1 - density)",
        )


def della_probabilities(delta: torch.Tensor, density: float, epsilon: float) -> torch.Tensor:
    """Per-row keep probabilities ``(density - eps) + 2 eps * rank_norm`` in the work dtype (rows
    along dim 1 of the tensor, a 1-D tensor is one row), rounded as mergekit rounds them."""
    work = _work_dtype(delta)
    t = delta.unsqueeze(0) if delta.dim() < 2 else delta
    order = torch.argsort(t.abs(), dim=1)
    ranks = torch.empty_like(order)
    size = t.shape[1]
    view_shape = [1] * t.dim()
    view_shape[1] = size
    ranks.scatter_(1, order, torch.arange(size, device=t.device).view(view_shape).expand_as(order))
    del order
    r = ranks.to(work) + 1
    del ranks
    one = torch.ones((), dtype=work)
    span = (torch.tensor(float(size - 1), dtype=torch.float64).to(work) + one) - one  # max rank - min rank
    if float(span) == 0:  # one element per row: mergekit divides 0 by 0; we give it density - epsilon
        rank_norm = torch.zeros_like(r)
    else:
        rank_norm = r.sub_(1).div_(float(span)).clamp_(0, 1)
    probs = rank_norm.mul_(2).mul_(epsilon).add_(density - epsilon)
    return probs.reshape(delta.shape)


def della_magprune(delta: torch.Tensor, density: float, epsilon: float, *, rescale: bool = False,
                   generator: torch.Generator | None = None, inplace: bool = False) -> Sparsified:
    if density >= 1:
        return Sparsified(delta)
    if density <= 0:
        return Sparsified(torch.zeros_like(delta))
    check_della(density, epsilon)
    probs = della_probabilities(delta, density, epsilon)
    gen_device = generator.device if generator is not None else delta.device
    u = torch.rand(probs.shape, generator=generator, device=gen_device, dtype=torch.float32)
    if u.device != delta.device:
        u = u.to(delta.device)
    keep = u < probs
    del u, probs
    return _apply_mask(delta, keep, rescale, _work_dtype(delta), inplace)


def sparsify_delta(delta: torch.Tensor, density: float, method: str, *, gamma: float = 0.0, epsilon: float = 0.0,
                   rescale: bool = False, generator: torch.Generator | None = None,
                   inplace: bool = False) -> Sparsified:
    if method == "magnitude":
        return magnitude(delta, density, rescale=rescale, inplace=inplace)
    if method == "random":
        return random(delta, density, rescale=rescale, generator=generator, inplace=inplace)
    if method == "magnitude_outliers":
        return magnitude_outliers(delta, density, gamma, rescale=rescale, inplace=inplace)
    if method == "della_magprune":
        return della_magprune(delta, density, epsilon, rescale=rescale, generator=generator, inplace=inplace)
    raise ConfigError(f"unknown sparsification method {method!r}", hint=f"one of {', '.join(METHODS)}")


def sparsify(delta: torch.Tensor, density: float, method: str, *, gamma: float = 0.0, epsilon: float = 0.0,
             rescale: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """mergekit's ``sparsify`` (``rescale`` = ``rescale_norm=RescaleNorm.l1``); never modifies ``delta``."""
    s = sparsify_delta(delta, density, method, gamma=gamma, epsilon=epsilon, rescale=rescale, generator=generator)
    out = s.materialize()
    return out.to(delta.dtype) if out.dtype != delta.dtype else out
