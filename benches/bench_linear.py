"""Small-M Linear products on the CPU: ferrolm's kernel vs ``F.linear`` (MKL) vs oneDNN, same run.

The shapes are Qwen2.5-1.5B's (hidden 1536, intermediate 8960, 2 KV heads of 128, vocabulary
151936); ``M`` is the number of rows of ``x`` (tokens in one forward). Up to ``M`` of ~16 the
product is bound by reading the weights, so it should cost about what ``M = 1`` costs.

Modes:

* **Smoke** (default; CI runs it once with ``--benchmark-disable``): two small shapes at M = 1
  and 16, and a whole forward of a random model with Qwen2-1.5B's per-layer shapes, 2 layers
  and a small vocabulary, plain and under :func:`ferrolm.speculative.route_linear`.
* **Full** (``FERROLM_BENCH_LINEAR_FULL=1``, or the script): every shape, M = 1, 2, 4, 8, 12,
  16, 32, and the forward with all 28 layers and the real vocabulary (~6.2 GB of float32
  weights).

``python benches/bench_linear.py [--smoke]`` runs the full (or smoke) suite without pytest, on 2
threads, and prints Markdown tables: the median milliseconds of each implementation, the
ratios to ferrolm, and the weight bytes ferrolm reads per second. Every ferrolm result is
checked against ``F.linear`` before it is timed.

Threads: torch's OpenMP workers spin for a while after each torch operation (libgomp's default
wait policy), and on a machine with as many threads as cores they then compete with the kernel's
helper thread. Run the script twice, plain and with ``OMP_WAIT_POLICY=PASSIVE`` in the
environment (it must be set before torch is imported), to see both; the header says which.

oneDNN is ``torch._C._nn.mkldnn_linear`` as ``torch.utils.mkldnn.to_mkldnn(linear)`` runs it
(the weight converted once, ``x`` and the result converted per call, as a user of that module
pays); its column is skipped, with the reason, when this torch has no oneDNN.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch

from ferrolm import speculative

FULL = os.environ.get("FERROLM_BENCH_LINEAR_FULL", "") not in ("", "0")
THREADS = 2

# (out_features, in_features): q/o proj, k/v proj, gate/up, down, lm_head.
SHAPES_FULL = [(1536, 1536), (256, 1536), (8960, 1536), (1536, 8960), (151936, 1536)]
ROWS_FULL = [1, 2, 4, 8, 12, 16, 32]
SHAPES_SMOKE = [(256, 1536), (1536, 1536)]
ROWS_SMOKE = [1, 16]
TOKENS = [1, 4, 8, 16]


def onednn_reason() -> str | None:
    """Why the oneDNN column is missing, or None when it can run."""
    if not torch.backends.mkldnn.is_available():
        return "this torch was built without oneDNN (torch.backends.mkldnn.is_available() is False)"
    if not hasattr(torch._C._nn, "mkldnn_linear"):
        return "this torch has no torch._C._nn.mkldnn_linear"
    return None


def onednn_linear(layer: torch.nn.Linear) -> Callable[[torch.Tensor], torch.Tensor]:
    """What ``torch.utils.mkldnn.to_mkldnn(layer)`` runs (that module's import warns about
    TorchScript's deprecation): the weight converted once, ``x`` and the result per call."""
    w = layer.weight.detach().to_mkldnn()
    b = None if layer.bias is None else layer.bias.detach().to_mkldnn()
    linear = torch._C._nn.mkldnn_linear

    def run(x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = linear(x.to_mkldnn(), w, b).to_dense()
        return y

    return run


def implementations(layer: torch.nn.Linear) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The products to compare for one layer (no grad): name -> function of x."""
    w, b = layer.weight.detach(), layer.bias
    impls: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "ferrolm": lambda x: speculative.linear(x, w, b),
        "F.linear": lambda x: torch.nn.functional.linear(x, w, b),
    }
    if onednn_reason() is None:
        impls["oneDNN"] = onednn_linear(layer)
    return impls


def make_layer(out_features: int, in_features: int) -> torch.nn.Linear:
    torch.manual_seed(out_features + in_features)
    layer = torch.nn.Linear(in_features, out_features, bias=out_features == 256)
    return layer.requires_grad_(False)


def check(layer: torch.nn.Linear, x: torch.Tensor) -> None:
    expected = torch.nn.functional.linear(x, layer.weight, layer.bias)
    torch.testing.assert_close(
        speculative.linear(x, layer.weight, layer.bias), expected, rtol=1e-4, atol=1e-4
    )


def qwen2_like(layers: int, vocab: int) -> Any:
    """A random model with Qwen2.5-1.5B's per-layer shapes (float32, eval, no grad)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=layers,
        num_attention_heads=12,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config).eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------
# pytest-benchmark


@pytest.fixture(autouse=True, scope="module")
def _threads() -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


_CASES = [
    (impl, shape, m)
    for shape in (SHAPES_FULL if FULL else SHAPES_SMOKE)
    for m in (ROWS_FULL if FULL else ROWS_SMOKE)
    for impl in ("ferrolm", "F.linear", "oneDNN")
]


@pytest.fixture(scope="module")
def layers() -> dict[tuple[int, int], torch.nn.Linear]:
    return {}


@pytest.mark.parametrize(("impl", "shape", "m"), _CASES)
def test_bench_linear(
    benchmark: Any,
    layers: dict[tuple[int, int], torch.nn.Linear],
    impl: str,
    shape: tuple[int, int],
    m: int,
) -> None:
    if impl == "oneDNN" and (reason := onednn_reason()) is not None:
        pytest.skip(reason)
    if shape not in layers:
        layers.clear()  # one shape's weights at a time (lm_head is 0.9 GB)
        layers[shape] = make_layer(*shape)
    layer = layers[shape]
    x = torch.randn(m, shape[1])
    with torch.no_grad():
        check(layer, x)
        fn = implementations(layer)[impl]
        benchmark.group = f"linear-{shape[0]}x{shape[1]}-M{m}"
        out = benchmark(fn, x)
    assert out.shape == (m, shape[0])


@pytest.fixture(scope="module")
def model() -> Any:
    return qwen2_like(28, 151936) if FULL else qwen2_like(2, 4096)


@pytest.mark.parametrize("routed", [False, True], ids=["plain", "route_linear"])
@pytest.mark.parametrize("tokens", TOKENS)
def test_bench_forward(benchmark: Any, model: Any, tokens: int, routed: bool) -> None:
    ids = torch.arange(tokens).unsqueeze(0) + 10
    with torch.no_grad():
        plain = model(ids, use_cache=False).logits
        benchmark.group = f"forward-{tokens}-tokens"
        if routed:
            with speculative.route_linear(model) as n:
                assert n == 7 * model.config.num_hidden_layers + 1
                out = benchmark(lambda: model(ids, use_cache=False).logits)
        else:
            out = benchmark(lambda: model(ids, use_cache=False).logits)
    torch.testing.assert_close(out, plain, rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# script mode


def median_ms(fn: Callable[[], Any], min_time: float = 0.4, max_reps: int = 50) -> float:
    fn()  # warm-up: first-touch page faults, oneDNN primitive creation
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < min_time and len(times) < max_reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def table_linear(shapes: list[tuple[int, int]], rows: list[int]) -> None:
    reason = onednn_reason()
    if reason is not None:
        print(f"oneDNN column skipped: {reason}\n")
    print(
        "| shape (out x in) | M | ferrolm ms | ferrolm GB/s | F.linear ms | oneDNN ms "
        "| F.linear / ferrolm | oneDNN / ferrolm |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for shape in shapes:
        layer = make_layer(*shape)
        impls = implementations(layer)
        weight_bytes = layer.weight.numel() * 4
        for m in rows:
            x = torch.randn(m, shape[1])
            with torch.no_grad():
                check(layer, x)
                ms = {name: median_ms(lambda f=f, x=x: f(x)) for name, f in impls.items()}
            ours = ms["ferrolm"]
            dnn = ms.get("oneDNN")
            print(
                f"| {shape[0]} x {shape[1]} | {m} | {ours:.3f} | {weight_bytes / ours / 1e6:.1f} "
                f"| {ms['F.linear']:.3f} | {'-' if dnn is None else f'{dnn:.3f}'} "
                f"| {ms['F.linear'] / ours:.2f} | {'-' if dnn is None else f'{dnn / ours:.2f}'} |",
                flush=True,
            )
        del layer, impls


def table_forward(layers: int, vocab: int) -> None:
    model = qwen2_like(layers, vocab)
    print(f"\nWhole forward, random Qwen2-1.5B-shaped model, {layers} layers, vocab {vocab}:\n")
    print("| tokens | plain ms | route_linear ms | plain / routed |")
    print("|---:|---:|---:|---:|")
    for n in TOKENS:
        ids = torch.arange(n).unsqueeze(0) + 10
        with torch.no_grad():
            step = lambda ids=ids: model(ids, use_cache=False)  # noqa: E731
            plain = median_ms(step, min_time=2.0, max_reps=10)
            with speculative.route_linear(model):
                routed = median_ms(step, min_time=2.0, max_reps=10)
        print(f"| {n} | {plain:.1f} | {routed:.1f} | {plain / routed:.2f} |", flush=True)


def main(argv: list[str]) -> None:
    smoke = "--smoke" in argv
    torch.set_num_threads(THREADS)
    policy = os.environ.get("OMP_WAIT_POLICY", "unset (libgomp spins, then sleeps)")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY {policy}\n"
    )
    table_linear(SHAPES_SMOKE if smoke else SHAPES_FULL, ROWS_SMOKE if smoke else ROWS_FULL)
    if "--no-forward" not in argv:
        table_forward(2, 4096) if smoke else table_forward(28, 151936)


if __name__ == "__main__":
    main(sys.argv[1:])
