"""GPU (CUDA) block-wise and INTELLECT-1 kernels against the CPU path; NVRTC compile check."""

from __future__ import annotations

import pytest
import torch

import ferrolm.cuda
from ferrolm import comm


def test_comm_kernel_families_are_registered_and_compile():
    names = ferrolm.cuda.kernel_names()
    assert {"quantize_blockwise", "quantize_intellect"} <= set(names)
    if not ferrolm.cuda.nvrtc_available():
        pytest.skip("NVRTC not found")
    compiled = {k.name: k.ptx_bytes for k in ferrolm.cuda.compile_check()}
    assert compiled["quantize_blockwise"] > 0
    assert compiled["quantize_intellect"] > 0


@pytest.mark.gpu
@pytest.mark.parametrize("block", [16, 256, 1024])
def test_gpu_blockwise_is_bit_identical_to_cpu(block):
    gen = torch.Generator().manual_seed(5)
    for n in (1, 255, 256, 257, 1_000_003):
        x = torch.randn(n, generator=gen) * 3 + 1
        cpu = comm.quantize(x, scheme="blockwise", block_size=block)
        gpu = comm.quantize(x.cuda(), scheme="blockwise", block_size=block)
        assert torch.equal(gpu.data.cpu(), cpu.data)
        assert torch.equal(comm.dequantize(gpu).cpu(), comm.dequantize(cpu))
        acc = torch.ones(n, device="cuda")
        comm.dequantize_accumulate(gpu, acc)
        assert torch.equal(acc.cpu(), comm.dequantize_accumulate(cpu, torch.ones(n)))


@pytest.mark.gpu
def test_gpu_intellect_matches_cpu_within_rounding():
    x = torch.randn(1_000_003, generator=torch.Generator().manual_seed(6))
    cpu = comm.quantize(x, scheme="intellect")
    gpu = comm.quantize(x.cuda(), scheme="intellect")
    # The scale is computed in double on both sides but summed in another order, and bucket
    # sums use atomics: codes may differ on bucket edges, codebook entries in the last bits.
    same = (gpu.payload.cpu() == cpu.payload).float().mean().item()
    assert same > 0.9999
    torch.testing.assert_close(gpu.params.cpu(), cpu.params, rtol=1e-4, atol=1e-6)
    back = comm.dequantize(gpu).cpu()
    assert float((back - x).norm() / x.norm()) < 0.02
    acc = torch.ones_like(x, device="cuda")
    comm.dequantize_accumulate(gpu, acc)
    torch.testing.assert_close(acc.cpu(), back + 1.0, rtol=0, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("scheme", ["blockwise", "intellect"])
def test_gpu_rejects_non_finite(scheme):
    x = torch.ones(5000, device="cuda")
    x[1234] = float("inf")
    with pytest.raises(ValueError, match="finite"):
        comm.quantize(x, scheme=scheme)


@pytest.mark.gpu
@pytest.mark.parametrize(("scheme", "param"), [("minmax", 1), ("blockwise", 7), ("intellect", 99)])
def test_gpu_refuses_forged_parameters_like_the_cpu(scheme, param):
    # The same core check as the CPU path, on a host copy of the parameters: a forged NaN in
    # any parameter is a ValueError and the accumulator is left as it was.
    q = comm.quantize(torch.randn(4096, device="cuda"), scheme=scheme, block_size=256)
    data = q.data.clone()
    data[4 * param : 4 * param + 4] = torch.tensor([float("nan")], device="cuda").view(torch.uint8)
    forged = comm.QuantizedTensor(data, q.scheme, q.shape, q.dtype, q.block_size)
    acc = torch.ones(4096, device="cuda")
    with pytest.raises(ValueError, match="`packed"):
        comm.dequantize_accumulate(forged, acc)
    assert bool((acc == 1).all())
    with pytest.raises(ValueError, match="`packed"):
        comm.dequantize(forged)
    cpu = comm.QuantizedTensor(data.cpu(), q.scheme, q.shape, q.dtype, q.block_size)
    with pytest.raises(ValueError, match="`packed"):
        comm.dequantize(cpu)
