"""CUDA plumbing: honest discovery, NVRTC compiles every kernel, the first kernel matches CPU."""

from __future__ import annotations

import locale
import re

import pytest
import torch

import ferrolm
import ferrolm.cuda
from ferrolm import comm

needs_nvrtc = pytest.mark.skipif(
    not ferrolm.cuda.nvrtc_available(),
    reason="NVRTC (libnvrtc) not found: install a CUDA build of torch or set FERROLM_NVRTC",
)


def test_kernel_names_list_every_shipped_family():
    assert "quantize_minmax" in ferrolm.cuda.kernel_names()


@needs_nvrtc
def test_every_kernel_compiles_with_nvrtc():
    reports = ferrolm.cuda.compile_check()
    assert {r.name for r in reports} == set(ferrolm.cuda.kernel_names())
    assert all(r.ptx_bytes > 1000 for r in reports)


@needs_nvrtc
def test_compile_check_for_an_explicit_architecture():
    reports = ferrolm.cuda.compile_check(arch="compute_90")
    assert len(reports) == len(ferrolm.cuda.kernel_names())


@needs_nvrtc
def test_compile_check_defaults_to_the_oldest_architecture_the_kernels_can_use():
    # NVRTC's own default before CUDA 13 is compute_52, where atomicAdd on doubles
    # (quantize_intellect) does not exist: a compile without an architecture must not use it.
    default = ferrolm._native.cuda.default_arch()
    assert re.fullmatch(r"compute_\d+", default), default
    assert int(default.removeprefix("compute_")) >= 60
    assert ferrolm.cuda.compile_check() == ferrolm.cuda.compile_check(arch=default)
    # Below compute_60 the kernels do not compile (CUDA 12: no atomicAdd(double); CUDA 13: the
    # architecture is gone), which is why the default is not NVRTC's.
    with pytest.raises(RuntimeError, match="NVRTC failed to compile"):
        ferrolm.cuda.compile_check(arch="compute_52")


@needs_nvrtc
def test_compiling_leaves_the_thread_locale_and_python_encoding_alone():
    # NVRTC 12.4 (torch 2.6) switched the calling thread to the "C" locale and left it: after a
    # compile, open() and subprocess text decoded UTF-8 as ASCII in this process.
    before = locale.getpreferredencoding(False)
    ferrolm.cuda.compile_check()
    assert locale.getpreferredencoding(False) == before


@needs_nvrtc
def test_a_bad_architecture_is_runtime_error_with_nvrtc_log():
    with pytest.raises(RuntimeError, match="NVRTC failed to compile"):
        ferrolm.cuda.compile_check(arch="compute_1")


def test_compile_check_without_nvrtc_is_runtime_error(monkeypatch):
    monkeypatch.setattr(ferrolm.cuda, "nvrtc_available", lambda: False)
    with pytest.raises(RuntimeError, match="NVRTC"):
        ferrolm.cuda.compile_check()


def test_is_available_agrees_with_driver_and_devices():
    if not ferrolm.cuda.driver_available():
        assert ferrolm.cuda.device_count() == 0
        assert not ferrolm.cuda.is_available()


def test_device_count_without_driver_raises_runtime_error_in_native():
    if ferrolm.cuda.driver_available():
        pytest.skip("this machine has a CUDA driver")
    with pytest.raises(RuntimeError, match="CUDA driver"):
        ferrolm._native.cuda.device_count()


@pytest.mark.gpu
def test_gpu_minmax_quantizer_is_bit_identical_to_cpu():
    gen = torch.Generator().manual_seed(3)
    for n in (1, 255, 256, 257, 1_000_003):
        x = torch.randn(n, generator=gen) * 3 + 1
        cpu = comm.quantize(x)
        gpu = comm.quantize(x.cuda())
        assert torch.equal(gpu.payload.cpu(), cpu.payload)
        assert torch.equal(gpu.params.cpu(), cpu.params)
        assert torch.equal(comm.dequantize(gpu).cpu(), comm.dequantize(cpu))
        acc = torch.ones(n, device="cuda")
        comm.dequantize_accumulate(gpu, acc)
        assert torch.equal(acc.cpu(), comm.dequantize_accumulate(cpu, torch.ones(n)))


@pytest.mark.gpu
def test_gpu_quantizer_rejects_nan():
    x = torch.ones(1000, device="cuda")
    x[500] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        comm.quantize(x)
