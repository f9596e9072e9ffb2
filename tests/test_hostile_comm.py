"""Hostile input to ``ferrolm.comm`` (issue 16): forged wire bytes, forged ``QuantizedTensor``
fields, integers beyond 64 bits, fp16 overflow, disagreeing shapes, peers that already left.

Every forgery must be ONE clear exception naming the field, never NaN data, never success, and
in a ring never an honest rank hanging or succeeding alone.
"""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest
import torch
import torch.distributed as dist

from ferrolm import _native, comm
from ferrolm.comm import allreduce as ar
from ferrolm.comm.quantize import QuantizedTensor
from ferrolm.testing.launch import run_local

SCHEMES = ["minmax", "blockwise", "intellect"]
HEADER = 11  # magic, scheme, dtype, block (u32), ndim


def _frame(scheme: str = "blockwise", shape: tuple[int, ...] = (4, 64)) -> bytes:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    return comm.quantize(x, scheme=scheme, block_size=16).to_bytes()


def _with(buf: bytes, at: int, fmt: str, value: object) -> bytes:
    b = bytearray(buf)
    struct.pack_into(fmt, b, at, value)
    return bytes(b)


# --- the serialised form: every field checked, named, before any allocation ---------------


@pytest.mark.parametrize("scheme", SCHEMES)
def test_frame_round_trips(scheme):
    buf = _frame(scheme, (3, 50))
    q = QuantizedTensor.from_bytes(memoryview(buf))
    assert (q.scheme, q.shape, q.dtype) == (scheme, torch.Size([3, 50]), torch.float32)
    assert q.to_bytes() == buf
    torch.testing.assert_close(comm.dequantize(q), comm.dequantize(QuantizedTensor.from_bytes(buf)))


@pytest.mark.parametrize(
    ("forge", "field"),
    [
        (lambda b: b[:7], "buf header"),
        (lambda b: b"XLQ1" + b[4:], "buf magic"),
        (lambda b: _with(b, 4, "<B", 9), "buf scheme code"),
        (lambda b: _with(b, 5, "<B", 200), "buf dtype code"),
        (lambda b: _with(b, 6, "<I", 17), "buf block size"),
        (lambda b: _with(b, 6, "<I", 0xFFFFFFFF), "buf block size"),
        (lambda b: _with(b, 10, "<B", 255), "buf number of dimensions"),
        (lambda b: _with(b, 10, "<B", 40), "buf shape"),  # dims past the end of the bytes
        (lambda b: _with(b, HEADER, "<q", -4), "buf dimension 0"),
        (lambda b: _with(b, HEADER, "<q", 0), "buf shape"),  # no values
        # 2^40 x 64 values claimed, 300 bytes present: refused by length, nothing allocated.
        (lambda b: _with(b, HEADER, "<q", 1 << 40), "buf data"),
        # 2^62 x 2^62 overflows 64 bits.
        (lambda b: _with(_with(b, HEADER, "<q", 1 << 62), HEADER + 8, "<q", 1 << 62), "buf shape"),
        (lambda b: b[:-1], "buf data"),
        (lambda b: b + b"\0", "buf data"),
    ],
)
def test_forged_frames_are_one_value_error_naming_the_field(forge, field):
    with pytest.raises(ValueError, match=f"^`{field}`"):
        QuantizedTensor.from_bytes(forge(_frame()))


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_parameter_anywhere_is_refused(scheme, bad):
    buf = _frame(scheme)
    start = HEADER + 2 * 8
    n_params = {"minmax": 2, "blockwise": 2 * 256 // 16, "intellect": 256}[scheme]
    # Not only the first float (that one doubles as the poison marker): every position.
    for p in sorted({p for p in (0, 1, n_params // 2 + 1, n_params - 1) if p < n_params}):
        forged = _with(buf, start + 4 * p, "<f", bad)
        with pytest.raises(ValueError, match="`packed"):
            QuantizedTensor.from_bytes(forged)


def test_a_negative_scale_is_refused():
    forged = _with(_frame("minmax"), HEADER + 16 + 4, "<f", -0.5)
    with pytest.raises(ValueError, match="non-negative scale"):
        QuantizedTensor.from_bytes(forged)


def test_from_bytes_wants_bytes():
    with pytest.raises(TypeError, match="`buf`"):
        QuantizedTensor.from_bytes("FLQ1")  # type: ignore[arg-type]


# --- hand-built QuantizedTensor objects ----------------------------------------------------


def _q(**kw):
    q = comm.quantize(torch.randn(64), scheme="blockwise", block_size=16)
    fields = {
        "data": q.data,
        "scheme": q.scheme,
        "shape": q.shape,
        "dtype": q.dtype,
        "block_size": q.block_size,
    }
    fields.update(kw)
    return QuantizedTensor(**fields)


@pytest.mark.parametrize(
    ("q", "exc", "match"),
    [
        (lambda: _q(data=[1, 2, 3]), TypeError, r"`q\.data` must be a uint8"),
        (lambda: _q(data=torch.zeros(72)), TypeError, r"`q\.data` must be a uint8"),
        (lambda: _q(data=torch.zeros(2, 36, dtype=torch.uint8)), ValueError, r"`q\.data`"),
        (lambda: _q(data=torch.zeros(71, dtype=torch.uint8)), ValueError, r"`q\.data` must hold"),
        (lambda: _q(shape=(-1, -64)), ValueError, r"`q\.shape`"),
        (lambda: _q(shape=(1 << 40, 1 << 40)), ValueError, r"`q\.shape`"),
        (lambda: _q(shape="64"), ValueError, r"`q\.shape`"),
        (lambda: _q(dtype=torch.int8), TypeError, r"`q\.dtype`"),
        (lambda: _q(scheme="int4"), ValueError, "`scheme`"),
        (lambda: _q(block_size=2**70), ValueError, "`block_size`"),
    ],
)
def test_forged_quantized_tensors_are_clear_errors(q, exc, match):
    with pytest.raises(exc, match=match):
        comm.dequantize(q())
    acc = torch.zeros(64)
    with pytest.raises(exc, match=match):
        comm.dequantize_accumulate(q(), acc)
    assert not acc.any()


def test_forged_parameters_in_a_quantized_tensor_leave_the_accumulator_untouched():
    q = _q()
    data = q.data.clone()
    data[12:16] = torch.tensor([float("nan")]).view(torch.uint8)  # block 1's scale
    acc = torch.ones(64)
    with pytest.raises(ValueError, match="block 1"):
        comm.dequantize_accumulate(_q(data=data), acc)
    assert torch.equal(acc, torch.ones(64))


# --- integers beyond 64 bits name the argument ---------------------------------------------


def test_huge_integers_name_the_argument():
    x = np.zeros(4, dtype=np.float32)
    out = np.zeros(12, dtype=np.uint8)
    with pytest.raises(ValueError, match="`n`"):
        _native.comm.packed_len("minmax", 256, 2**70)
    with pytest.raises(ValueError, match="`n`"):
        _native.comm.packed_len("minmax", 256, -1)
    with pytest.raises(ValueError, match="`n`"):
        _native.comm.packed_len("minmax", 256, 2**63)  # fits 64 bits, not memory
    with pytest.raises(TypeError, match="`n`"):
        _native.comm.packed_len("minmax", 256, 3.0)
    with pytest.raises(ValueError, match="`block_size`"):
        _native.comm.quantize_packed("blockwise", 2**70, x, out)
    with pytest.raises(ValueError, match="`block_size`"):
        _native.comm.dequantize_packed("blockwise", 2**64, out, x, False)
    with pytest.raises(ValueError, match="`n`"):
        _native.comm.check_params("minmax", 256, out[:8], 2**65)
    with pytest.raises(ValueError, match="`block_size`"):
        comm.quantize(torch.ones(16), scheme="blockwise", block_size=2**70)
    with pytest.raises(ValueError, match="`block_size`"):
        comm.all_reduce(torch.ones(16), block_size=-(2**70))
    with pytest.raises(ValueError, match="`piece_size`"):
        comm.all_reduce(torch.ones(16), piece_size=2**70)
    with pytest.raises(ValueError, match="`shape`"):
        _native.comm.frame_header("minmax", 256, "float32", [2**64])
    codes, y = np.zeros(8, dtype=np.uint8), np.ones(8, dtype=np.float32)
    with pytest.raises(ValueError, match="`min`"):
        _native.comm.dequantize_minmax(codes, 10**400, 1.0, y)
    with pytest.raises(ValueError, match="`min, scale`"):
        _native.comm.dequantize_minmax(codes, 0.0, float("nan"), y, accumulate=True)
    with pytest.raises(ValueError, match="`min, scale`"):
        _native.comm.dequantize_minmax(codes, 2**200, 1.0, y)  # beyond float32: inf
    assert (y == 1).all()


# --- a group of one rank behaves like a larger one -----------------------------------------


def test_world_size_one_behaves_like_larger_worlds():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        x = torch.randn(1000, generator=torch.Generator().manual_seed(3))
        bad = x.clone()
        bad[500] = float("nan")
        before = bad.clone()
        with pytest.raises(ValueError, match="finite"):
            comm.all_reduce(bad, op="sum", timeout=10.0)
        np.testing.assert_array_equal(bad.numpy(), before.numpy())
        bad[500] = float("inf")
        with pytest.raises(ValueError, match="finite"):
            comm.all_reduce(bad, op="avg", timeout=10.0)
        # The result is the int8 round trip, as every rank of a larger group adopts it.
        y = x.clone()
        comm.all_reduce(y, op="sum", scheme="blockwise", timeout=10.0, piece_size=300)
        expected = torch.cat(
            [
                comm.dequantize(comm.quantize(x[a : a + 300], "blockwise"))
                for a in (0, 300, 600, 900)
            ]
        )
        assert torch.equal(y, expected)
        assert not torch.equal(y, x)
        # A huge timeout is a timeout, not an OverflowError.
        comm.all_reduce(x.clone(), timeout=1e300)
    finally:
        dist.destroy_process_group()


# --- two ranks: shapes, fp16 overflow, forged pieces, a peer that already left ---------------


def _try(fn):
    try:
        fn()
        return "no error"
    except Exception as e:  # the test inspects the class and message
        return f"{type(e).__name__}: {e}"


def _hostile_worker(rank: int, world: int) -> dict:
    out: dict = {}
    # 1) Same element count, different shapes.
    x = torch.ones((100, 100) if rank == 0 else (10000,))
    out["shape"] = _try(lambda: comm.all_reduce(x, timeout=10.0))
    out["shape_intact"] = bool((x == 1).all())
    # 2) fp16 "sum" overflows 65504: refused on both ranks, inputs untouched.
    h = torch.full((1000,), 40000.0, dtype=torch.float16)
    out["fp16"] = _try(lambda: comm.all_reduce(h, op="sum", timeout=10.0))
    out["fp16_intact"] = bool((h == 40000.0).all())
    out["fp16_avg"] = _try(lambda: comm.all_reduce(h.clone(), op="avg", timeout=10.0))
    # 3) A forged NaN in a middle parameter of one piece on the wire, in each phase.
    for phase in (0, 1):
        original = dist.isend
        forged = [0]

        def isend(tensor, *args, _phase=phase, _orig=original, _forged=forged, **kwargs):
            tag = kwargs.get("tag", 0)
            is_data = tensor.dtype == torch.uint8 and tag < (1 << 30)
            if rank == 1 and is_data and (tag >> 20) // world == _phase and not _forged[0]:
                _forged[0] = 1
                tensor = tensor.clone()
                tensor[4 * 5 : 4 * 6] = torch.tensor([float("nan")]).view(torch.uint8)
            return _orig(tensor, *args, **kwargs)

        dist.isend = isend
        y = torch.randn(20_000)
        before = y.clone()
        try:
            out[f"forged{phase}"] = _try(
                lambda y=y: comm.all_reduce(y, scheme="blockwise", timeout=10.0, piece_size=4000)
            )
        finally:
            dist.isend = original
        out[f"forged{phase}_intact"] = bool(torch.equal(y, before))
        out[f"forged{phase}_sent"] = forged[0]
    # 4) The group still works after all of that.
    z = torch.full((64,), float(rank + 1))
    comm.all_reduce(z, op="sum", scheme="minmax", timeout=10.0)
    out["after"] = z.tolist()[:2]
    # 5) A peer that already exited: the survivor gets CommTimeoutError, not gloo's error.
    group = dist.new_group([0, 1])
    dist.barrier(group)
    if rank == 1:
        return out  # the launcher then exits this process at once
    time.sleep(1.0)
    w = torch.randn(5000)
    before = w.clone()
    t = time.perf_counter()
    out["gone"] = _try(lambda: comm.all_reduce(w, group=group, timeout=5.0))
    out["gone_s"] = time.perf_counter() - t
    out["gone_intact"] = bool(torch.equal(w, before))
    return out


def test_hostile_peers_fail_every_rank_clearly():
    r0, r1 = run_local(_hostile_worker, 2, timeout=120)
    for r in (r0, r1):
        assert r["shape"].startswith("ValueError"), r["shape"]
        assert "(100, 100)" in r["shape"], r["shape"]
        assert "(10000,)" in r["shape"], r["shape"]
        assert r["shape_intact"]
        assert r["fp16"].startswith("ValueError"), r["fp16"]
        assert "torch.float16" in r["fp16"], r["fp16"]
        assert "`tensor`" in r["fp16"], r["fp16"]
        assert r["fp16_intact"]
        assert r["fp16_avg"] == "no error"
        for phase in (0, 1):
            got = r[f"forged{phase}"]
            assert got.startswith("ValueError"), (phase, got)
            assert r[f"forged{phase}_intact"], phase
        assert r["after"] == [3.0, 3.0]
    # The receiver of the forged piece says what it got.
    assert r1["forged0_sent"] == 1
    assert r1["forged1_sent"] == 1
    for phase in (0, 1):
        assert "rank 1 sent a malformed piece" in r0[f"forged{phase}"], r0[f"forged{phase}"]
        assert "block 2" in r0[f"forged{phase}"]  # float 5 is block 2's scale
    assert r0["gone"].startswith("CommTimeoutError"), r0["gone"]
    assert "unchanged" in r0["gone"]
    assert r0["gone_s"] < 5.0
    assert r0["gone_intact"]


def test_headers_from_a_foreign_peer_are_refused():
    from ferrolm.comm import _header

    h = _header.build_header((4,), 0, 1, 256, 0, True, 1 << 20, torch.device("cpu")).tolist()
    other = list(h)
    other[0] = 0x46524C4D  # the first header layout's magic
    with pytest.raises(ValueError, match="rank 1 sent a header that is not ferrolm's"):
        _header.check_headers([h, other], ar._DTYPES, comm.SCHEMES, comm.OPS)
    other = list(h)
    other[2] = 77
    with pytest.raises(ValueError, match=r"rank 0 has dtype torch\.float32, rank 1 has <code 77>"):
        _header.check_headers([h, other], ar._DTYPES, comm.SCHEMES, comm.OPS)
    deep = _header.build_header(tuple([1] * 20), 0, 1, 256, 0, True, 1, torch.device("cpu"))
    deeper = _header.build_header(tuple([1] * 21), 0, 1, 256, 0, True, 1, torch.device("cpu"))
    with pytest.raises(ValueError, match=r"shape \(1, 1, .*, \.\.\.\)"):
        _header.check_headers([deep.tolist(), deeper.tolist()], ar._DTYPES, comm.SCHEMES, comm.OPS)


def test_different_counts_name_both_shapes():
    from ferrolm.comm import _header

    a = _header.build_header((10,), 0, 1, 256, 0, True, 1, torch.device("cpu")).tolist()
    b = _header.build_header((2, 3), 0, 1, 256, 0, True, 1, torch.device("cpu")).tolist()
    with pytest.raises(
        ValueError, match=r"element count 10, rank 1 has 6 \(shapes \(10,\) and \(2, 3\)\)"
    ):
        _header.check_headers([a, b], ar._DTYPES, comm.SCHEMES, comm.OPS)


def test_to_bytes_of_forged_fields_is_a_clear_error():
    with pytest.raises(ValueError, match="`block_size` must be below 2\\*\\*32"):
        _q(scheme="minmax", data=comm.quantize(torch.randn(64)).data, block_size=2**40).to_bytes()
    with pytest.raises(ValueError, match=r"`self\.shape`"):
        _q(shape=(-64,)).to_bytes()
