"""pytest tests/benchmarks/test_gpu_benchmark.py — benchmarks/gpu.py where there is no GPU: one error line and
exit 2 from the command; the same measuring code run on CPU with a logical Ray GPU (so a GPU session's one try does not fail on
a bug); the rule that picks gpus_per_trial.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from benchmarks.gpu import datasheet_peak
from benchmarks.gpu_packing import recommend
from tests.support import REPO


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_without_cuda_the_command_exits_2_with_one_line():
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--json"], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and done.stdout == ""
    assert len(lines) == 1 and lines[0].startswith("error: ") and "CUDA" in lines[0], done.stderr


def test_gpus_per_trial_is_the_k_where_total_throughput_stops_growing_by_10_percent():
    def figures(*totals, error_at=None):
        return [{"k": k, "total_tokens_per_s": t} if k != error_at else {"k": k, "error": "out of memory"}
                for k, t in zip((1, 2, 4, 8, 16), totals)]

    assert recommend(figures(100, 180, 260, 280, 300)) == 4  # 280 < 1.1 × 260
    assert recommend(figures(100, 105, 300, 400, 500)) == 1  # the climb ends at the first flat step
    assert recommend(figures(100, 200, 400, 800, 1600)) == 16
    assert recommend(figures(100, 200, 400, 800, 1600, error_at=8)) == 4  # a k that failed ends the climb


def test_the_mfu_peak_is_the_datasheet_figure_of_the_named_gpu():
    assert datasheet_peak("NVIDIA H200")[0] == datasheet_peak("NVIDIA H100 80GB HBM3")[0] == 989.4
    assert datasheet_peak("NVIDIA H100 PCIe")[0] == 756.5 and datasheet_peak("NVIDIA A100-SXM4-80GB")[0] == 312.0
    assert datasheet_peak("NVIDIA L4")[0] == 121.0 and datasheet_peak("NVIDIA L40S")[0] == 362.05
    assert datasheet_peak("NVIDIA A10G")[0] is None and datasheet_peak("Tesla T4")[0] is None  # unknown: no MFU
    assert "datasheet" in datasheet_peak("NVIDIA H200")[1]


@pytest.mark.slow
def test_the_benchmark_runs_end_to_end_on_cpu_with_a_logical_ray_gpu(monkeypatch):
    from benchmarks.gpu import measure

    monkeypatch.setenv("PYTHONPATH", str(REPO))
    result = measure(preset="smoke", steps=4, rounds=2, warmup=1, ks=(1, 2), pack_steps=3, pack_warmup=1,
                     compile_model=False, device="cpu")
    assert result["default_output_layer"] == "fused"  # CPU's
    assert set(result["output_layers"]) == {"plain", "fused", "hf"} and not result["errors"]
    assert result["fastest_output_layer_at_equal_loss"] in ("plain", "fused")
    assert all(v["tokens_per_s"] > 0 and v["val_loss"] > 0 for v in result["output_layers"].values())
    assert result["tokens_per_s"] > 0 and result["ratio_vs_hf"] > 0 and result["mfu"] is None  # no datasheet peak
    packing = result["packing"]
    assert [entry["k"] for entry in packing["per_k"]] == [1, 2]
    assert all("error" not in entry and entry["total_tokens_per_s"] > 0 for entry in packing["per_k"])
    assert packing["recommended_k"] in (1, 2) and packing["recommended_gpus_per_trial"] == 1 / packing[
        "recommended_k"]
