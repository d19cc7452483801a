"""mergegate's merge kernels against mergekit 0.1.5's ``merge_tensors`` (the reference, test-only).

Deterministic methods must give mergekit's result to the bit (same dtype, same bytes) on float32,
bfloat16 and float16 inputs. For magnitude-based sparsification (ties, breadcrumbs,
breadcrumbs_ties) the one allowed difference is which of several equal magnitudes exactly at a rank
threshold survive (mergekit's unstable argsort picks arbitrarily among them): bytes may differ only
at such tied elements, and only a few of them.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("mergekit")

from mergekit import merge_methods as mk  # noqa: E402

from mergegate.errors import ConfigError, UnsupportedMethodError  # noqa: E402
from mergegate.merging.methods import REGISTRY, UNSUPPORTED, get_method  # noqa: E402
from mergegate.merging.methods.base import BasePolicy, MergeInput, Scope  # noqa: E402


def _inputs(n_models: int, shape: tuple[int, ...], seed: int, spread: float = 1.0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g)
    return [base] + [base + spread * torch.randn(shape, generator=g) for _ in range(n_models)]


def run_both(name: str, tensors: list[torch.Tensor], base_index: int | None, per: list[dict], shared: dict,
             dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Our result and mergekit's. ``per`` holds the params of every input (base included) in input
    order; NON_BASE params are only read from non-base inputs."""
    ts = [t.to(dtype) for t in tensors]
    method = get_method(name)
    spec = method.spec
    full_shared = {p.name: p.default for p in spec.shared_params if not p.required}
    full_shared.update(shared)
    per_input = []
    for i, p in enumerate(per):
        params = {q.name: q.default for q in spec.input_params if not q.required
                  and (q.scope is Scope.INPUT or i != base_index)}
        params.update({k: v for k, v in p.items()
                       if i != base_index or spec_scope(spec, k) is Scope.INPUT})
        per_input.append(params)
    ours = method.merge(MergeInput(tensors=ts, base_index=base_index, per_input=per_input, shared=full_shared,
                                   name="model.layers.0.mlp.weight"))
    params = dict(shared)
    keys = {k for p in per for k in p}
    for key in keys:
        if spec_scope(spec, key) is Scope.INPUT:
            params[key] = [p[key] for p in per]
        else:
            params[key] = [p[key] for i, p in enumerate(per) if i != base_index]
    ref = mk.merge_tensors(ts, name, parameters=params, base_index=base_index, dtype=dtype)
    return ours.to(method.spec.result_dtype(dtype)), ref


def spec_scope(spec, key: str) -> Scope:
    return next(p.scope for p in spec.params if p.name == key)


_INT = {torch.float64: torch.int64, torch.float32: torch.int32, torch.float16: torch.int16,
        torch.bfloat16: torch.int16}


def bits(t: torch.Tensor) -> torch.Tensor:
    """The bit patterns (so -0.0 != +0.0 and NaN == NaN of the same payload)."""
    return t.contiguous().reshape(-1).view(_INT[t.dtype])


def assert_identical(ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.dtype == ref.dtype, (ours.dtype, ref.dtype)
    assert ours.shape == ref.shape
    differ = bits(ours) != bits(ref)
    if bool(differ.any()):
        i = int(differ.nonzero()[0])
        raise AssertionError(f"{int(differ.sum())} of {differ.numel()} elements differ from mergekit's, e.g. "
                             f"[{i}]: {float(ours.reshape(-1)[i])!r} vs {float(ref.reshape(-1)[i])!r}")


def tied_positions(tensors: list[torch.Tensor], base_index: int, per: list[dict], dtype: torch.dtype,
                   outliers: bool) -> torch.Tensor:
    """Elements where some input's |delta| equals a rank-threshold magnitude of that input."""
    ts = [t.to(dtype) for t in tensors]
    base = ts[base_index]
    tied = torch.zeros(base.shape, dtype=torch.bool)
    for i, (t, p) in enumerate(zip(ts, per)):
        if i == base_index or p.get("density", 1.0) >= 1:
            continue
        mag = (t - base).abs().float()
        flat = mag.reshape(-1).sort().values
        n = flat.numel()
        if outliers:
            target = int(p["density"] * n)
            n_top = int(p.get("gamma", 0.01) * n)
            n_bot = max(0, n - target - n_top)
            bounds = [flat[n_bot], flat[min(n - 1, n_bot + target - 1)]] if target > 0 else []
        else:
            k = max(1, int(p["density"] * n))
            bounds = [flat[n - k]]
        for v in bounds:
            tied |= mag == v
    return tied


def assert_close_up_to_ties(ours, ref, dtype, tied) -> None:
    assert ours.dtype == ref.dtype and ours.shape == ref.shape
    bad = (bits(ours) != bits(ref)).view(ref.shape)
    assert not (bad & ~tied).any(), "bytes differ at an element that is not tied at a rank threshold"
    # at most 1% (tiny tensors: at most the tied elements themselves)
    assert int(bad.sum()) <= max(int(0.01 * bad.numel()), int(tied.sum())), f"{int(bad.sum())} differ"


DTYPES = [torch.float32, torch.bfloat16, torch.float16]
SHAPES = [(257,), (48, 37)]


# ------------------------------------------------------------------------------------------
# linear


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    "weights,shared",
    [
        ([0.5, 0.5], {}),
        ([0.2, 0.3, 0.5], {"normalize": True}),
        ([1.0, -0.4, 0.7], {"normalize": False}),
        ([2.0, 1.0, -0.5], {}),
    ],
)
def test_linear(dtype, shape, weights, shared):
    tensors = _inputs(len(weights) - 1, shape, seed=1)
    ours, ref = run_both("linear", tensors, None, [{"weight": w} for w in weights], shared, dtype)
    assert_identical(ours, ref)


# ------------------------------------------------------------------------------------------
# slerp / nuslerp


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("t", [0.0, 0.3, 0.75, 1.0])
@pytest.mark.parametrize("spread", [1.0, 0.01])  # 0.01: nearly colinear, the lerp fallback
def test_slerp(dtype, shape, t, spread):
    tensors = _inputs(1, shape, seed=2, spread=spread)
    ours, ref = run_both("slerp", tensors, 0, [{}, {}], {"t": t}, dtype)
    assert_identical(ours, ref)


def test_slerp_base_second():
    tensors = _inputs(1, (40, 9), seed=3)
    ours, ref = run_both("slerp", tensors[::-1], 1, [{}, {}], {"t": 0.4}, torch.float32)
    assert_identical(ours, ref)


@pytest.mark.parametrize("dtype", DTYPES)
def test_slerp_several_chunks(dtype):
    """More than mergekit's 2**20-element chunk: norms and dot are sums over chunks, in its order."""
    tensors = _inputs(1, (1100, 1000), seed=21, spread=0.05)
    ours, ref = run_both("slerp", tensors, 0, [{}, {}], {"t": 0.35}, dtype)
    assert_identical(ours, ref)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_several_chunks(dtype):
    tensors = _inputs(2, (700, 1000), seed=22, spread=0.05)
    ours, ref = run_both("linear", tensors, None, [{"weight": 0.5}, {"weight": 0.3}, {"weight": -0.1}], {}, dtype)
    assert_identical(ours, ref)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_zero_products_are_positive_zero(dtype):
    """mergekit accumulates from +0: where every product is -0.0 the result is +0.0."""
    tensors = [torch.zeros(64), torch.zeros(64)]
    tensors[0][::2] = 1.0
    ours, ref = run_both("linear", tensors, None, [{"weight": -1.0}, {"weight": -2.0}], {"normalize": False}, dtype)
    assert_identical(ours, ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_base", [True, False])
@pytest.mark.parametrize(
    "shared",
    [{}, {"nuslerp_flatten": False}, {"nuslerp_flatten": False, "nuslerp_row_wise": True}],
)
def test_nuslerp(dtype, shape, with_base, shared):
    tensors = _inputs(2, shape, seed=4)
    per = [{"weight": 0.0}, {"weight": 0.3}, {"weight": 0.9}]
    if with_base:
        ours, ref = run_both("nuslerp", tensors, 0, per, shared, dtype)
    else:
        ours, ref = run_both("nuslerp", tensors[1:], None, per[1:], shared, dtype)
    assert_identical(ours, ref)


# ------------------------------------------------------------------------------------------
# the task-arithmetic family (deterministic members)

GTA_CASES = [
    # (per-input params of the non-base inputs, shared)
    ([{"weight": 0.3, "density": 0.5}, {"weight": 0.7, "density": 0.3}], {}),
    ([{"weight": 1.0, "density": 0.2}, {"weight": -0.5, "density": 0.7}, {"weight": 0.25, "density": 1.0}],
     {"normalize": True, "lambda": 0.8}),
    ([{"weight": 1.0, "density": 0.2}, {"weight": 0.5, "density": 0.7}, {"weight": 0.25, "density": 0.4}],
     {"normalize": False, "rescale": True}),
    ([{"weight": 0.6, "density": 0.9}, {"weight": 0.6, "density": 0.05}, {"weight": -0.3, "density": 0.5}],
     {"int8_mask": True, "normalize": True}),
    ([{"weight": 0.5, "density": 0.0}, {"weight": 0.5, "density": 1.5}], {"lambda": 1.3}),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("case", range(len(GTA_CASES)))
@pytest.mark.parametrize("name", ["task_arithmetic", "ties", "breadcrumbs", "breadcrumbs_ties"])
def test_task_arithmetic_family(name, case, shape, dtype):
    non_base, shared = GTA_CASES[case]
    if name.startswith("breadcrumbs"):
        non_base = [dict(p, gamma=g) for p, g in zip(non_base, (0.01, 0.0, 0.1))]
    tensors = _inputs(len(non_base), shape, seed=5 + case)
    per = [{}] + non_base
    ours, ref = run_both(name, tensors, 0, per, shared, dtype)
    if not torch.isfinite(ref).all():  # mergekit's float16 L1 norm overflowed (ours is redone in fp32)
        assert dtype == torch.float16 and shared.get("rescale") and torch.isfinite(ours).all()
        return
    if name == "task_arithmetic":
        assert_identical(ours, ref)
    else:
        tied = tied_positions(tensors, 0, per, dtype, outliers=name.startswith("breadcrumbs"))
        assert_close_up_to_ties(ours, ref, dtype, tied)


def test_float16_rescale_norm_overflow_stays_finite():
    """mergekit's float16 ||delta||_1 overflows to inf and its rescale writes NaN; ours does not."""
    tensors = [t * 4 for t in _inputs(1, (200, 200), seed=14)]
    ours, ref = run_both("ties", tensors, 0, [{}, {"weight": 1.0, "density": 0.5}], {"rescale": True},
                         torch.float16)
    assert torch.isnan(ref).any()
    assert torch.isfinite(ours).all()
    fp32, _ = run_both("ties", tensors, 0, [{}, {"weight": 1.0, "density": 0.5}], {"rescale": True},
                       torch.float32)
    # float16 rounding moves a few elements across the top-k threshold; the rest agree
    close = torch.isclose(ours.float(), fp32, rtol=1e-2, atol=2e-2)
    assert close.float().mean() > 0.99


def test_ties_reference_example():
    """The worked example from the mergekit notes: base 0, two models, density 1."""
    x = torch.tensor([1, -2, 3, -0.5, 0.1, -4])
    y = torch.tensor([-3, 1, 1, 0.4, -0.2, -1])
    ours, ref = run_both("ties", [torch.zeros(6), x, y], 0, [{}, {"weight": 1.0}, {"weight": 1.0}], {},
                         torch.float32)
    expected = torch.tensor([-3, -2, 2, -0.5, -0.2, -2.5])
    torch.testing.assert_close(ours, expected)
    torch.testing.assert_close(ref, expected)


def test_base_in_the_middle():
    tensors = _inputs(2, (30, 11), seed=9)
    order = [tensors[1], tensors[0], tensors[2]]
    per = [{"weight": 0.4, "density": 0.6}, {}, {"weight": 0.6, "density": 0.5}]
    ours, ref = run_both("ties", order, 1, per, {}, torch.float32)
    tied = tied_positions(order, 1, per, torch.float32, outliers=False)
    assert_close_up_to_ties(ours, ref, torch.float32, tied)


def test_ties_large_bf16_ties_only_at_threshold():
    """A tensor large enough for many bfloat16 magnitudes to tie at the top-k threshold."""
    tensors = _inputs(3, (256, 256), seed=11, spread=0.02)
    per = [{}, {"weight": 0.5, "density": 0.3}, {"weight": 0.3, "density": 0.5}, {"weight": 0.2, "density": 0.7}]
    ours, ref = run_both("ties", tensors, 0, per, {}, torch.bfloat16)
    tied = tied_positions(tensors, 0, per, torch.bfloat16, outliers=False)
    assert_close_up_to_ties(ours, ref, torch.bfloat16, tied)


# ------------------------------------------------------------------------------------------
# model_stock / passthrough


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(6, 5, 4)])
@pytest.mark.parametrize("n_models", [2, 3])
@pytest.mark.parametrize("filter_wise", [False, True])
def test_model_stock(dtype, shape, n_models, filter_wise):
    tensors = _inputs(n_models, shape, seed=12)
    ours, ref = run_both("model_stock", tensors, 0, [{}] * (n_models + 1), {"filter_wise": filter_wise}, dtype)
    assert_identical(ours, ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [None, 1.0, 0.5, -2.0])
def test_passthrough(dtype, scale):
    (t,) = _inputs(0, (33, 7), seed=13)
    per = [{}] if scale is None else [{"scale": scale}]
    ours, ref = run_both("passthrough", [t], None, per, {}, dtype)
    assert_identical(ours, ref)



# ------------------------------------------------------------------------------------------
# the methods added for mergekit 0.1.5 parity: sce, arcee_fusion, karcher, nearswap, multislerp,
# ram, ramplus_tl — every one bit-identical to mergekit on all three dtypes

NEW_SHAPES = [(257,), (48, 37), (6, 5, 4)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", NEW_SHAPES)
@pytest.mark.parametrize("n_models", [1, 2, 3])
@pytest.mark.parametrize("shared", [{}, {"select_topk": 0.3}, {"select_topk": 0.7, "int8_mask": True},
                                    {"select_topk": 0.0}])
def test_sce(dtype, shape, n_models, shared):
    tensors = _inputs(n_models, shape, seed=31, spread=0.05)
    ours, ref = run_both("sce", tensors, 0, [{}] * (n_models + 1), shared, dtype)
    assert_identical(ours, ref)


@pytest.mark.parametrize("dtype", DTYPES + [torch.float64])
@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_sce_variance_is_torch_var(dtype, n):
    """sce's vectorised Welford variance gives torch.var's bytes (which mergekit calls)."""
    from mergegate.merging.methods.sce import VAR_CHUNK, variance_across

    g = torch.Generator().manual_seed(n)
    tvs = (torch.randn(n, 3, VAR_CHUNK // 2 + 77, generator=g) * 0.02).to(dtype)
    tvs[:, 0, :100] = 0  # zero variance
    tvs[:, 1, :100] = tvs[0, 1, :100].clone()  # identical rows
    tvs[-1, 2, :50] *= 1e3  # one outlier
    before = tvs.clone()
    assert_identical(variance_across(tvs), torch.var(tvs, dim=0, unbiased=False))
    assert torch.equal(tvs, before)  # inputs untouched


def test_sce_base_in_the_middle_and_no_change():
    tensors = _inputs(2, (30, 11), seed=32)
    order = [tensors[1], tensors[0], tensors[2]]
    ours, ref = run_both("sce", order, 1, [{}, {}, {}], {"select_topk": 0.5}, torch.bfloat16)
    assert_identical(ours, ref)
    same = [tensors[0], tensors[0].clone(), tensors[0].clone()]  # zero task vectors: uniform weights
    ours, ref = run_both("sce", same, 0, [{}, {}, {}], {"select_topk": 0.5}, torch.float16)
    assert_identical(ours, ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", NEW_SHAPES + [(64, 300)])
@pytest.mark.parametrize("spread", [0.05, 1.0])
def test_arcee_fusion(dtype, shape, spread):
    tensors = _inputs(1, shape, seed=33, spread=spread)
    ours, ref = run_both("arcee_fusion", tensors, 0, [{}, {}], {}, dtype)
    assert_identical(ours, ref)  # float32 for 16-bit inputs, as mergekit returns it
    ours, ref = run_both("arcee_fusion", tensors[::-1], 1, [{}, {}], {}, dtype)
    assert_identical(ours, ref)


def test_arcee_fusion_samples_large_tensors_from_the_generator():
    """Above 1M elements the quartiles come from a 1M-element sample: mergekit draws it from the
    global RNG, mergegate from the per-tensor generator (reproducible); the masks agree closely."""
    from mergegate.merging.methods.arcee_fusion import arcee_fusion_tensors

    base, other = _inputs(1, (1200, 1000), seed=34, spread=0.05)
    first = arcee_fusion_tensors(base, other, torch.Generator().manual_seed(1))
    again = arcee_fusion_tensors(base, other, torch.Generator().manual_seed(1))
    assert torch.equal(bits(first), bits(again))
    torch.manual_seed(0)
    ref = mk.merge_tensors([base, other], "arcee_fusion", base_index=0)
    kept_ours, kept_ref = first != base, ref != base
    assert abs(kept_ours.float().mean() - kept_ref.float().mean()) < 0.01
    assert (kept_ours == kept_ref).float().mean() > 0.99
    assert torch.equal(bits(first[kept_ours & kept_ref]), bits(ref[kept_ours & kept_ref]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", NEW_SHAPES)
@pytest.mark.parametrize("n_models", [1, 2, 3, 4])
@pytest.mark.parametrize("shared", [{}, {"max_iter": 2, "tol": 1e-3}, {"max_iter": 50, "tol": 1e-8}])
def test_karcher(dtype, shape, n_models, shared):
    tensors = _inputs(n_models, shape, seed=35, spread=0.5)[1:] if n_models > 1 else _inputs(0, shape, seed=35)
    ours, ref = run_both("karcher", tensors, None, [{}] * len(tensors), shared, dtype)
    assert_identical(ours, ref)


@pytest.mark.parametrize("dtype", DTYPES)
def test_karcher_zero_inputs(dtype):
    a, b = _inputs(1, (40, 9), seed=36)
    for tensors in ([a, torch.zeros_like(a), b], [torch.zeros_like(a), -torch.zeros_like(a)], [a, a.clone()],
                    [a, -a]):
        ours, ref = run_both("karcher", tensors, None, [{}] * len(tensors), {}, dtype)
        assert_identical(ours, ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", NEW_SHAPES)
@pytest.mark.parametrize("t", [0.0, 1e-4, 0.01, 0.5, 2.0])
def test_nearswap(dtype, shape, t):
    tensors = _inputs(1, shape, seed=37, spread=0.02)
    ours, ref = run_both("nearswap", tensors, 0, [{}, {}], {"t": t}, dtype)
    assert_identical(ours, ref)
    ours, ref = run_both("nearswap", tensors[::-1], 1, [{}, {}], {"t": t}, dtype)
    assert_identical(ours, ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", NEW_SHAPES)
@pytest.mark.parametrize("with_base", [True, False])
@pytest.mark.parametrize("weights,shared", [
    ([0.5, 0.5], {}),
    ([0.2, 0.3, 0.5], {"normalize_weights": False}),
    ([1.0, 2.0, 0.5, 0.25], {"eps": 1e-6}),
    ([0.7], {}),
])
def test_multislerp(dtype, shape, with_base, weights, shared):
    tensors = _inputs(len(weights), shape, seed=38, spread=0.3)
    per = [{}] + [{"weight": w} for w in weights]
    if with_base:
        ours, ref = run_both("multislerp", tensors, 0, per, shared, dtype)
    else:
        ours, ref = run_both("multislerp", tensors[1:], None, per[1:], shared, dtype)
    assert_identical(ours, ref)


@pytest.mark.parametrize("dtype", DTYPES)
def test_multislerp_antipodal(dtype):
    """Two opposite vectors with equal weights: mergekit falls back to the weighted sum; with a
    third it raises, and mergegate names the field to change."""
    a, c = _inputs(1, (20, 8), seed=39)
    ours, ref = run_both("multislerp", [a, -a], None, [{"weight": 0.5}, {"weight": 0.5}], {}, dtype)
    assert_identical(ours, ref)
    tensors, weights = [a, -a, c], [1.0, 1.0, 0.0]
    if dtype == torch.float16:  # eps = 1e-8 rounds to 0 in float16: no error, mergekit divides 0 by 0
        ours, ref = run_both("multislerp", tensors, None, [{"weight": w} for w in weights], {}, dtype)
        assert_identical(ours, ref)
        return
    with pytest.raises(ValueError, match="weighted sum"):
        mk.merge_tensors([t.to(dtype) for t in tensors], "multislerp", parameters={"weight": weights})
    with pytest.raises(ConfigError) as info:
        run_both("multislerp", tensors, None, [{"weight": w} for w in weights], {}, dtype)
    assert info.value.field == "weight"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", NEW_SHAPES)
@pytest.mark.parametrize("name", ["ram", "ramplus_tl"])
@pytest.mark.parametrize("n_models", [1, 2, 3])
@pytest.mark.parametrize("shared", [{}, {"epsilon": 0.03}, {"epsilon": 0.0}])
def test_ram(dtype, shape, name, n_models, shared):
    tensors = _inputs(n_models, shape, seed=40, spread=0.05)
    for t in tensors[1:]:  # some positions unchanged by some models: unique, shared and idle positions
        t.view(-1)[::3] = tensors[0].view(-1)[::3]
    tensors[-1].view(-1)[1::4] = tensors[0].view(-1)[1::4]
    if name == "ramplus_tl":
        shared = dict(shared, r=0.5, alpha=0.6) if shared else shared
    ours, ref = run_both(name, tensors, 0, [{}] * (n_models + 1), shared, dtype)
    assert_identical(ours, ref)  # ramplus_tl: float32 for 16-bit inputs, as mergekit returns it


@pytest.mark.parametrize("name", ["ram", "ramplus_tl"])
def test_ram_several_chunks(name):
    """More positions than one chunk: per-position reductions and whole-tensor counts as mergekit."""
    tensors = _inputs(3, (1100, 1000), seed=42, spread=0.01)
    for t in tensors[1:]:
        t.view(-1)[::5] = tensors[0].view(-1)[::5]
    shared = {"epsilon": 0.01} if name == "ram" else {"epsilon": 0.01, "r": 0.3, "alpha": 0.5}
    ours, ref = run_both(name, tensors, 0, [{}] * 4, shared, torch.bfloat16)
    assert_identical(ours, ref)


@pytest.mark.parametrize("name", ["sce", "arcee_fusion", "karcher", "nearswap", "multislerp", "ram", "ramplus_tl"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_result_dtype_is_mergekits(name, dtype):
    """The planner writes ``spec.result_dtype(compute)`` when the recipe has no out_dtype."""
    n = 1 if name in ("arcee_fusion", "nearswap") else 2
    tensors = _inputs(n, (16, 8), seed=41, spread=0.1)
    base_index = None if name == "karcher" else 0
    params = {"t": 0.1} if name == "nearswap" else {"weight": [0.5] * n} if name == "multislerp" else {}
    ref = mk.merge_tensors([t.to(dtype) for t in tensors], name, parameters=params, base_index=base_index)
    assert get_method(name).spec.result_dtype(dtype) == ref.dtype


# ------------------------------------------------------------------------------------------
# registry and specs


def _mergekit_methods():
    return {m.spec.name: m for m in mk.registered_methods()}


def test_every_mergekit_method_is_registered():
    for name in _mergekit_methods():
        assert get_method(name) is REGISTRY[name]
    assert UNSUPPORTED == frozenset()
    assert set(REGISTRY) - set(_mergekit_methods()) == {"tsvm"}


def test_a_method_listed_as_unsupported_says_so(monkeypatch):
    import mergegate.merging.methods as registry

    monkeypatch.setattr(registry, "UNSUPPORTED", frozenset({"future_method"}))
    with pytest.raises(UnsupportedMethodError) as info:
        get_method("future_method")
    assert info.value.field == "merge_method"
    assert "not supported yet" in info.value.message


def test_unknown_method_suggests_a_name():
    with pytest.raises(ConfigError) as info:
        get_method("tie")
    assert not isinstance(info.value, UnsupportedMethodError)
    assert info.value.field == "merge_method"
    assert "ties" in (info.value.hint or "")


@pytest.mark.parametrize("name", sorted(set(REGISTRY) - {"tsvm"}))
def test_spec_matches_mergekit(name):
    ours = REGISTRY[name].spec
    theirs = _mergekit_methods()[name].spec
    assert ours.name == theirs.name
    their_params = {p.name: p for p in theirs.parameters}
    assert {p.name for p in ours.params} == set(their_params)
    for p in ours.params:
        q = their_params[p.name]
        assert p.scope.value == q.scope.value, p.name
        assert p.required == q.required, p.name
        if not p.required:
            assert p.default == q.default, p.name
    assert ours.base.value == theirs.contract.base.value or (
        ours.base is BasePolicy.IGNORED and theirs.contract.base.value == "ignored"
    )
    contract = theirs.contract
    assert (ours.min_inputs, ours.max_inputs) == (contract.min_inputs, contract.max_inputs)
    assert (ours.min_non_base, ours.max_non_base) == (contract.min_non_base, contract.max_non_base)
    assert ours.pretty_name == theirs.pretty_name and ours.reference_url == theirs.reference_url
    for p in ours.params:
        kind = their_params[p.name].value_type
        if kind in (bool, int, float):
            assert p.kind is kind, p.name
