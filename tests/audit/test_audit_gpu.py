"""GPU checks (skipped without CUDA): the toy audit on CUDA agrees with CPU; vLLM agrees with transformers."""

from __future__ import annotations

from pathlib import Path

import pytest

from _audit_helpers import toy_kwargs


@pytest.mark.gpu
def test_toy_audit_on_cuda_matches_cpu(toy_fleet: Path, fleet_report, tmp_path: Path) -> None:  # noqa: ANN001
    from mergegate.audit import audit_models

    report = audit_models([str(toy_fleet / "base"), str(toy_fleet / "expert")],
                          **toy_kwargs(toy_fleet, device="cuda", cache=tmp_path / "c.sqlite"))
    for gpu, cpu in zip(report.scores, fleet_report.scores):
        assert abs(gpu.alignment - cpu.alignment) <= 0.05


@pytest.mark.gpu
def test_vllm_backend_matches_transformers(toy_fleet: Path, tmp_path: Path) -> None:
    pytest.importorskip("vllm")
    from mergegate.audit.generators import TransformersGenerator, VLLMGenerator

    prompts = [f"What is {a} + {b}?" for a in range(4) for b in range(4)]
    hf = TransformersGenerator.load(toy_fleet / "base", device="cuda", max_new_tokens=24).generate(prompts)
    gen = VLLMGenerator(toy_fleet / "base", max_new_tokens=24, gpu_memory_utilization=0.3)
    try:
        vl = gen.generate(prompts)
    finally:
        gen.close()
    assert sum(a == b for a, b in zip(hf, vl)) / len(prompts) >= 0.9
