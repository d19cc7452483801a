"""Identities every merge method must satisfy, checked with hypothesis on random tensors."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mergegate.merging.methods import get_method
from mergegate.merging.methods.base import MergeInput
from mergegate.merging.methods.sparsify import rank_range_mask, rank_value, topk_mask

SETTINGS = settings(max_examples=25, deadline=None)

shapes = st.one_of(
    st.tuples(st.integers(1, 64)),
    st.tuples(st.integers(1, 12), st.integers(1, 12)),
)
seeds = st.integers(0, 2**31 - 1)
weights = st.floats(-3, 3, allow_nan=False).filter(lambda w: abs(w) > 1e-3)


def rand(shape, seed, n=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g).to(dtype) for _ in range(n)]


def merge(name, tensors, base_index, per, shared=None, generator=None):
    method = get_method(name)
    spec = method.spec
    full = {p.name: p.default for p in spec.shared_params if not p.required}
    full.update(shared or {})
    per_input = []
    for i, p in enumerate(per):
        d = {q.name: q.default for q in spec.input_params if not q.required}
        d.update(p)
        per_input.append(d if i != base_index else {})
    return method.merge(MergeInput(tensors=tensors, base_index=base_index, per_input=per_input, shared=full,
                                   name="model.layers.0.self_attn.q_proj.weight", generator=generator))


@SETTINGS
@given(shape=shapes, seed=seeds, w=weights, normalize=st.booleans())
def test_linear_one_model_is_that_model(shape, seed, w, normalize):
    (x,) = rand(shape, seed)
    out = merge("linear", [x], None, [{"weight": w}], {"normalize": normalize})
    torch.testing.assert_close(out, x if normalize else x * w, rtol=1e-6, atol=1e-6)


@SETTINGS
@given(shape=shapes, seed=seeds, n=st.integers(2, 4), w=weights.filter(lambda w: w > 0))
def test_linear_equal_weights_of_identical_tensors(shape, seed, n, w):
    (x,) = rand(shape, seed)
    out = merge("linear", [x.clone() for _ in range(n)], None, [{"weight": w}] * n)
    torch.testing.assert_close(out, x, rtol=1e-6, atol=1e-6)


@SETTINGS
@given(shape=shapes, seed=seeds, n=st.integers(1, 3), name=st.sampled_from(
    ["task_arithmetic", "ties", "breadcrumbs", "breadcrumbs_ties", "dare_linear", "dare_ties", "della_linear"]))
def test_weight_zero_gives_the_base(shape, seed, n, name):
    tensors = rand(shape, seed, n + 1)
    per = [{}] + [{"weight": 0.0, "density": 0.5}] * n
    out = merge(name, tensors, 0, per, {"normalize": False}, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(out, tensors[0])


@SETTINGS
@given(shape=shapes, seed=seeds, w=weights, lam=st.floats(0.1, 2))
def test_ties_density_one_single_model_is_task_arithmetic(shape, seed, w, lam):
    tensors = rand(shape, seed, 2)
    per = [{}, {"weight": w, "density": 1.0}]
    shared = {"normalize": False, "lambda": lam}
    ties = merge("ties", tensors, 0, per, shared)
    ta = merge("task_arithmetic", tensors, 0, per, shared)
    assert torch.equal(ties, ta)


@SETTINGS
@given(shape=shapes, seed=seeds, dtype=st.sampled_from([torch.float32, torch.bfloat16]), colinear=st.booleans())
def test_slerp_endpoints(shape, seed, dtype, colinear):
    base, other = rand(shape, seed, 2, dtype)
    if colinear:
        other = (base * 1.5).to(dtype)
    assert torch.equal(merge("slerp", [base, other], 0, [{}, {}], {"t": 0.0}), base)
    assert torch.equal(merge("slerp", [base, other], 0, [{}, {}], {"t": 1.0}), other)
    assert torch.equal(merge("slerp", [other, base], 1, [{}, {}], {"t": 0.0}), base)


@SETTINGS
@given(shape=shapes, seed=seeds, dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]))
def test_passthrough_scale_one_is_identity(shape, seed, dtype):
    (x,) = rand(shape, seed, 1, dtype)
    assert torch.equal(merge("passthrough", [x], None, [{"scale": 1.0}]), x)
    assert torch.equal(merge("passthrough", [x], None, [{}]), x)


@SETTINGS
@given(shape=shapes, seed=seeds, t=st.floats(0, 1))
def test_nuslerp_of_identical_tensors_is_the_tensor(shape, seed, t):
    base, x = rand(shape, seed, 2)
    out = merge("nuslerp", [base, x, x.clone()], 0, [{}, {"weight": 1 - t}, {"weight": t}])
    torch.testing.assert_close(out, x, rtol=1e-5, atol=1e-5)


@SETTINGS
@given(shape=shapes, seed=seeds, n=st.integers(2, 4))
def test_model_stock_of_identical_models_is_that_model(shape, seed, n):
    base, x = rand(shape, seed, 2)
    out = merge("model_stock", [base] + [x.clone() for _ in range(n)], 0, [{}] * (n + 1))
    torch.testing.assert_close(out, x, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------
# rank selection (the O(n) replacement of mergekit's argsort)


@SETTINGS
@given(n=st.integers(1, 3000), seed=seeds, dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16,
                                                                   torch.float64]),
       ties=st.booleans(), data=st.data())
def test_rank_selection_matches_a_sort(n, seed, dtype, ties, data):
    (x,) = rand((n,), seed, 1, dtype)
    if ties:
        x[::3] = x[0]
        x[1::5] = -x[0]
    mag = x.abs()
    ordered = mag.double().sort().values
    rank = data.draw(st.integers(0, n - 1))
    sel = rank_value(x, rank)
    assert float(sel.value) == float(ordered[rank])
    assert sel.below == int((mag < sel.value).sum()) and sel.equal == int((mag == sel.value).sum())
    k = data.draw(st.integers(1, n))
    keep = topk_mask(mag, k)
    assert int(keep.sum()) == k
    if k < n:
        assert mag[keep].min() >= mag[~keep].max()
    start = data.draw(st.integers(0, n))
    stop = data.draw(st.integers(start, n))
    keep = rank_range_mask(mag, start, stop)
    assert int(keep.sum()) == stop - start
    if stop > start:
        assert float(mag[keep].min()) == float(ordered[start]) and float(mag[keep].max()) == float(ordered[stop - 1])


# ------------------------------------------------------------------------------------------
# TSVM


@SETTINGS
@given(m=st.integers(2, 20), n=st.integers(2, 20), seed=seeds, alpha=st.floats(0.1, 2))
def test_tsvm_single_task_is_task_arithmetic(m, n, seed, alpha):
    base, x = rand((m, n), seed, 2)
    out = merge("tsvm", [base, x], 0, [{}, {}], {"alpha": alpha})
    torch.testing.assert_close(out, base + alpha * (x - base), rtol=1e-4, atol=1e-4)


def test_tsvm_orthogonal_tasks_add_up():
    """Tasks in disjoint row/column blocks, each of full rank k: the concatenated singular vectors
    are already orthonormal, so TSVM is plain task arithmetic."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(20, 20, generator=g)
    t1, t2 = torch.zeros(20, 20), torch.zeros(20, 20)
    t1[:10, :10] = torch.randn(10, 10, generator=g)
    t2[10:, 10:] = torch.randn(10, 10, generator=g)
    out = merge("tsvm", [base, base + t1, base + t2], 0, [{}, {"weight": 1.0}, {"weight": 0.5}])
    torch.testing.assert_close(out, base + t1 + 0.5 * t2, rtol=1e-4, atol=1e-4)


def test_tsvm_randomized_svd_is_deterministic_and_accurate():
    from mergegate.merging.methods.tsvm import top_k_svd

    g = torch.Generator().manual_seed(1)
    m, n, k = 320, 280, 40  # min(m, n) > 256 and 2 (k + 20) < 280: the randomized path
    spectrum = torch.logspace(1, -3, n)
    u, _ = torch.linalg.qr(torch.randn(m, n, generator=g))
    v, _ = torch.linalg.qr(torch.randn(n, n, generator=g))
    a = (u * spectrum) @ v.T
    uu, ss, vh = top_k_svd(a, k, torch.Generator().manual_seed(5))
    uu2, ss2, vh2 = top_k_svd(a, k, torch.Generator().manual_seed(5))
    assert torch.equal(uu, uu2) and torch.equal(ss, ss2) and torch.equal(vh, vh2)
    assert uu.shape == (m, k) and ss.shape == (k,) and vh.shape == (k, n)
    torch.testing.assert_close(ss, spectrum[:k], rtol=1e-2, atol=1e-4)
    best = ((u[:, :k] * spectrum[:k]) @ v[:, :k].T - a).norm()
    assert ((uu * ss) @ vh - a).norm() <= best * 1.005
    # the merge itself is deterministic without a generator (a private seeded one is used)
    base = torch.randn(m, n, generator=g)
    tensors = [base] + [base + a * s for s in (1.0, -0.5, 0.3, 0.2)]  # k = 70: randomized too
    assert torch.equal(merge("tsvm", tensors, 0, [{}] * 4), merge("tsvm", tensors, 0, [{}] * 4))


def test_tsvm_embeddings_and_vectors_get_the_mean():
    base, x, y = rand((10, 6), 3, 3)
    method = get_method("tsvm")
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        out = method.merge(MergeInput(tensors=[base, x, y], base_index=0, per_input=[{}, {"weight": 1.0},
                                      {"weight": 1.0}], shared={"alpha": 1.0}, name=name))
        torch.testing.assert_close(out, base + ((x - base) + (y - base)) / 2)
    b1, x1 = rand((7,), 4, 2)
    out = method.merge(MergeInput(tensors=[b1, x1], base_index=0, per_input=[{}, {"weight": 2.0}],
                                  shared={"alpha": 0.5}, name="model.norm.weight"))
    torch.testing.assert_close(out, b1 + 0.5 * 2.0 * (x1 - b1))
