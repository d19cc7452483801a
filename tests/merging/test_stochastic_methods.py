"""DARE and DELLA: the kept fraction, the L1 rescale and seed reproducibility."""

from __future__ import annotations

import math

import pytest
import torch

from mergegate.errors import ConfigError
from mergegate.merging.methods import get_method
from mergegate.merging.methods.base import MergeInput
from mergegate.merging.methods.sparsify import bernoulli_mask, della_probabilities, sparsify

N = 200_000


def _pair(n=N, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, generator=g)
    delta = torch.randn(n, generator=g)
    delta[delta == 0] = 1.0  # every element of the task vector is non-zero
    return base.to(dtype), (base + delta).to(dtype)


def merge(name, tensors, per, shared, seed, name_=""):
    method = get_method(name)
    full = {p.name: p.default for p in method.spec.shared_params if not p.required}
    full.update(shared)
    per_input = [{}] + [
        {**{q.name: q.default for q in method.spec.input_params if not q.required}, **p} for p in per
    ]
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    return method.merge(MergeInput(tensors=tensors, base_index=0, per_input=per_input, shared=full,
                                   name=name_, generator=gen))


def _binomial_ok(kept: int, n: int, p: float, sigmas: float = 6.0) -> bool:
    return abs(kept - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1


@pytest.mark.parametrize("density", [0.01, 0.1, 0.5, 0.9, 0.53217])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_dare_kept_fraction(density, dtype):
    base, x = _pair(dtype=dtype)
    delta = x - base
    masked = sparsify(delta, density, "random", generator=torch.Generator().manual_seed(3))
    keep = masked != 0
    assert _binomial_ok(int(keep.sum()), int(torch.count_nonzero(delta)), density)
    assert torch.equal(masked[keep], delta[keep])  # the kept elements are untouched
    if dtype == torch.float32:  # and through the merge
        out = merge("dare_linear", [base, x], [{"weight": 1.0, "density": density}], {"rescale": False}, seed=3)
        assert torch.equal(out, base + masked)


@pytest.mark.parametrize("p", [1e-4, 0.25, 0.5, 0.5 + 2**-20, 0.999])
def test_bernoulli_mask_probability(p):
    g = torch.Generator().manual_seed(11)
    n = 2_000_000
    kept = int(bernoulli_mask((n,), p, g, torch.device("cpu")).sum())
    assert _binomial_ok(kept, n, p)


def test_bernoulli_mask_resolves_below_the_byte_level():
    """p between two multiples of 1/256: the second level must add exactly the fractional part."""
    g = torch.Generator().manual_seed(12)
    n = 4_000_000
    lo = 100 / 256
    p = lo + 0.5 / 256
    kept = int(bernoulli_mask((n,), p, g, torch.device("cpu")).sum())
    assert _binomial_ok(kept, n, p, sigmas=5)
    assert kept > n * lo + 0.25 * n / 256  # clearly above the byte-quantised probability


@pytest.mark.parametrize("name,extra", [("dare_linear", {}), ("della_linear", {"epsilon": 0.1})])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_rescale_preserves_l1_norm(name, extra, dtype):
    base, x = _pair(dtype=dtype)
    out = merge(name, [base, x], [{"weight": 1.0, "density": 0.3, **extra}], {"rescale": True}, seed=5)
    delta = (x - base).float()
    merged = (out - base).float()
    assert int(torch.count_nonzero(merged)) < 0.5 * N
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    assert abs(merged.abs().sum() / delta.abs().sum() - 1) < tol


@pytest.mark.parametrize("name", ["dare_ties", "dare_linear", "della", "della_linear"])
def test_same_seed_same_result_other_seed_differs(name):
    base, x = _pair(n=5000)
    _, y = _pair(n=5000, seed=1)
    per = [{"weight": 0.6, "density": 0.4}, {"weight": 0.4, "density": 0.6}]
    a = merge(name, [base, x, y], per, {}, seed=7)
    b = merge(name, [base, x, y], per, {}, seed=7)
    c = merge(name, [base, x, y], per, {}, seed=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_della_kept_fraction_and_rank_dependence():
    base, x = _pair()
    density, eps = 0.4, 0.15
    out = merge("della_linear", [base, x], [{"weight": 1.0, "density": density, "epsilon": eps}],
                {"rescale": False}, seed=9)
    delta = x - base
    keep = (out - base) != 0
    assert _binomial_ok(int(keep.sum()), N, density)
    # p rises linearly with the magnitude rank: the top half keeps density + eps/2 on average
    top = delta.abs() >= delta.abs().median()
    assert abs(float(keep[top].float().mean()) - (density + eps / 2)) < 0.01
    assert abs(float(keep[~top].float().mean()) - (density - eps / 2)) < 0.01


def test_della_probabilities_per_row():
    delta = torch.tensor([[0.1, -3.0, 2.0], [5.0, 0.0, -1.0]])
    probs = della_probabilities(delta, 0.5, 0.2)
    torch.testing.assert_close(probs, torch.tensor([[0.3, 0.7, 0.5], [0.7, 0.3, 0.5]]))
    one_d = della_probabilities(torch.tensor([3.0, 1.0, 2.0, -4.0, 0.5]), 0.5, 0.2)
    torch.testing.assert_close(one_d, torch.tensor([0.6, 0.4, 0.5, 0.7, 0.3]))


@pytest.mark.parametrize("density,epsilon", [(0.1, 0.15), (0.9, 0.1), (0.5, 0.5)])
def test_della_bad_epsilon_is_a_config_error(density, epsilon):
    base, x = _pair(n=100)
    with pytest.raises(ConfigError) as info:
        merge("della", [base, x], [{"weight": 1.0, "density": density, "epsilon": epsilon}], {}, seed=1)
    assert info.value.field == "epsilon"


def test_density_edge_cases():
    base, x = _pair(n=1000)
    delta = x - base
    for method in ("random", "magnitude", "magnitude_outliers", "della_magprune"):
        assert torch.equal(sparsify(delta, 1.0, method, epsilon=0.1), delta)
        assert not torch.count_nonzero(sparsify(delta, 0.0, method, epsilon=0.1, generator=torch.Generator()))
    # magnitude keeps at least one element for any positive density
    assert int(torch.count_nonzero(sparsify(delta, 1e-9, "magnitude"))) == 1


def test_dare_ties_zero_density_input_still_counts_in_no_consensus_divisor():
    """mergekit: a fully dropped input contributes zeros; dare_linear with normalize divides by
    the sum of all weights."""
    base, x = _pair(n=1000)
    out = merge("dare_linear", [base, x, x.clone()], [{"weight": 1.0, "density": 0.0},
                                                      {"weight": 1.0, "density": 1.0}],
                {"normalize": True}, seed=2)
    torch.testing.assert_close(out, base + (x - base) / 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("density", [0.5, 0.3 + 0.5 / 256])
def test_fused_dare_chunks_match_the_two_level_byte_mask(monkeypatch, dtype, density):
    """The fused chunked DARE (subtract, mask, norms per chunk) keeps exactly the elements whose
    random byte is below floor(256 p) (plus the second-level ties), chunk after chunk from one
    generator, and its rescale factor is the ratio of the L1 norms."""
    from mergegate.merging.methods import sparsify as sp

    monkeypatch.setattr(sp, "DARE_CHUNK", 4096)
    n = 4096 * 5 + 123  # several chunks and a ragged tail
    base, x = _pair(n=n, dtype=dtype)
    delta = x - base
    got = sp.random_delta(x, base, density, rescale=True, generator=torch.Generator().manual_seed(4))
    again = sp.sparsify_delta(delta.clone(), density, "random", rescale=True,
                              generator=torch.Generator().manual_seed(4), inplace=True)
    assert torch.equal(got.delta, again.delta) and got.scale == again.scale
    # replay the draws chunk by chunk
    g = torch.Generator().manual_seed(4)
    hi = int(density * 256)
    frac = density * 256 - hi
    keep = []
    for start in range(0, n, 4096):
        c = min(n, start + 4096) - start
        if density == 0.5:  # one bit per element: bit r of byte j decides element r * nb + j
            nb = (c + 7) // 8
            u = torch.empty((nb + 7) // 8, dtype=torch.int64).random_(-(2**63), None, generator=g)
            u = u.view(torch.uint8)[:nb].to(torch.int64)
            bits = (u.view(1, nb) >> torch.arange(8).view(8, 1)) & 1
            keep.append(bits.reshape(-1)[:c].bool())
            continue
        u = torch.empty((c + 7) // 8, dtype=torch.int64).random_(-(2**63), None, generator=g).view(torch.uint8)[:c]
        k = u < hi
        if frac > 0:
            tie = torch.nonzero(u == hi).reshape(-1)
            if tie.numel():
                k[tie[torch.rand(tie.numel(), generator=g, dtype=torch.float64) < frac]] = True
        keep.append(k)
    keep = torch.cat(keep)
    assert torch.equal(got.delta != 0, keep & (delta != 0))
    assert torch.equal(got.delta[keep], delta[keep])
    ratio = delta.double().abs().sum() / got.delta.double().abs().sum()
    tol = 1e-6 if dtype in (torch.float32, torch.float64) else 1e-2
    assert abs(got.scale / float(ratio) - 1) < tol


def test_fused_dare_same_seed_same_mask_other_seed_differs():
    from mergegate.merging.methods import sparsify as sp

    base, x = _pair(n=300_000, dtype=torch.bfloat16)
    a = sp.random_delta(x, base, 0.4, rescale=True, generator=torch.Generator().manual_seed(1))
    b = sp.random_delta(x, base, 0.4, rescale=True, generator=torch.Generator().manual_seed(1))
    c = sp.random_delta(x, base, 0.4, rescale=True, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a.delta, b.delta) and a.scale == b.scale
    assert not torch.equal(a.delta, c.delta)
