"""The cost-aware planner and calibration: the plan against a brute-force NumPy reference, and
the generator's no-speculation path against ``target.generate``."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
import torch
from test_speculative_generate import hf_greedy, noisy_copy, tiny_model

from ferrolm import speculative
from ferrolm.speculative.planner import calibrate_costs, replan


def _reference_plan(
    table: Any,
    sizes: list[int],
    tv: list[float],
    widths: list[int],
    td: list[float],
    fixed: float,
    t_ar: float,
) -> tuple[int, int, float]:
    """Brute force over (n, d) with the trees' level widths counted here from `parents`."""
    best = (1, 0, t_ar)
    for n, t in zip(sizes, tv):
        for d in range(1, table.max_depth + 1):
            tokens = table.value(n, d)
            if not np.isfinite(tokens) or tokens <= 0 or n < 2:
                continue
            tree = table.tree(n, d)
            has_kids = np.zeros(n, bool)
            has_kids[tree.parents[1:]] = True
            levels = [1] + [
                int((has_kids & (tree.depth == lev)).sum())
                for lev in range(1, int(tree.depth.max()))
            ]
            draft = sum(
                float(np.interp(w, widths, td))
                if w <= widths[-1]
                else td[-1]
                + (w - widths[-1]) * max(0.0, (td[-1] - td[-2]) / (widths[-1] - widths[-2]))
                for w in levels
            )
            s = (fixed + draft + t) / tokens
            if s < best[2]:
                best = (n, d, s)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_costed_plan_equals_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = np.sort(rng.dirichlet(np.ones(5)) * rng.uniform(0.5, 0.95))[::-1]
    table = speculative.sequoia_dp(p, max_nodes=32, max_depth=8)
    sizes = [1, 2, 4, 8, 12, 16, 24, 32]
    tv = list(np.cumsum(rng.uniform(0.001, 0.3, len(sizes))) + 1.0)
    widths = [1, 2, 4, 8]
    td = list(np.cumsum(rng.uniform(0.001, 0.2, len(widths))) + rng.uniform(0.05, 0.4))
    fixed = float(rng.uniform(0, 0.05))
    got = speculative.plan(
        table, sizes, tv, td, t_autoregressive_s=tv[0] + fixed, draft_widths=widths, t_fixed_s=fixed
    )
    n, d, s = _reference_plan(table, sizes, tv, widths, td, fixed, tv[0] + fixed)
    assert got.s_per_token == pytest.approx(s, rel=1e-9)
    assert (got.n, got.d) == (n, d) or got.s_per_token == pytest.approx(s, rel=1e-12)
    assert got.speedup == pytest.approx((tv[0] + fixed) / s, rel=1e-9)


def test_costed_plan_bad_input() -> None:
    table = speculative.sequoia_dp([0.6, 0.2], max_nodes=8, max_depth=4)
    with pytest.raises(ValueError, match="t_draft_s"):
        speculative.plan(table, [1, 4], [1.0, 1.1], [0.1, 0.2], 1.0, draft_widths=[1])
    with pytest.raises(ValueError, match="t_autoregressive_s"):
        speculative.plan(table, [2, 4], [1.0, 1.1], [0.1], draft_widths=[1])
    with pytest.raises(ValueError, match="draft_widths"):
        speculative.plan(table, [1, 4], [1.0, 1.1], [0.1], 1.0, draft_widths=[0])
    with pytest.raises(ValueError, match="t_fixed_s"):
        speculative.plan(table, [1, 4], [1.0, 1.1], [0.1], 1.0, draft_widths=[1], t_fixed_s=-1.0)
    with pytest.raises(ValueError, match="t_draft_s"):
        speculative.plan(table, [1, 4], [1.0, 1.1], [float("nan")], 1.0, draft_widths=[1])
    with pytest.raises(TypeError, match="table"):
        speculative.draft_level_widths("table", 4, 2)  # type: ignore[arg-type]


def test_replan_prefers_no_speculation_when_verification_is_dear() -> None:
    plan, levels = replan(
        [0.3, 0.1], [1, 4, 8], [1.0, 4.0, 8.0], [1, 4], [0.5, 2.0], fixed_s=0.0, max_depth=4
    )
    assert (plan.n, plan.d, plan.speedup) == (1, 0, 1.0)
    assert len(levels) == 0
    plan, levels = replan(
        [0.8, 0.1], [1, 4, 8], [1.0, 1.05, 1.1], [1, 4], [0.05, 0.08], fixed_s=0.0, max_depth=6
    )
    assert plan.d >= 2
    assert plan.speedup > 1.5
    assert levels[0] == 1
    assert len(levels) == plan.d


@pytest.fixture(scope="module")
def pair() -> tuple[Any, Any]:
    target = tiny_model("qwen2")
    return target, noisy_copy(target, 0.2)


class _Calls:
    def __init__(self, model: Any) -> None:
        self.n = 0
        model.register_forward_pre_hook(self)

    def __call__(self, *_: Any) -> None:
        self.n += 1


def test_no_speculation_never_runs_the_draft_and_equals_generate(pair: tuple[Any, Any]) -> None:
    target, draft = pair
    gen = speculative.SpeculativeGenerator(target, draft, method="specexec", budget=8)
    plain, _ = replan([0.1], [1, 2], [1.0, 3.0], [1], [1.0], fixed_s=0.0, max_depth=2)
    cal = speculative.Calibration(
        plain,
        np.array([0.1]),
        np.array([1, 2]),
        np.array([1.0, 3.0]),
        np.array([1]),
        np.array([1.0]),
        0.0,
        1.0,
        np.zeros(0, np.int64),
        0.0,
        1.0,
    )
    gen.adopt(cal)
    calls = _Calls(draft)
    prompts = [[3, 14, 15, 9], [2, 6, 5, 3, 5, 8, 9]]
    out = gen.generate(prompts, max_new_tokens=12, do_sample=False)
    assert calls.n == 0
    assert out.stats.draft_forwards == 0
    for p, new in zip(prompts, out.new_tokens):
        assert new == hf_greedy(target, p, 12)
    assert out.stats.tau == pytest.approx(1.0)


def test_calibrate_measures_and_adopts_a_plan(pair: tuple[Any, Any]) -> None:
    target, draft = pair
    gen = speculative.SpeculativeGenerator(target, draft, method="sequoia", budget=16)
    lines: list[str] = []
    cal = gen.calibrate(
        [[5, 6, 7, 8, 9, 10], [40, 41, 42]],
        sizes=(1, 2, 4, 8, 16),
        widths=(1, 2, 4),
        max_new_tokens=8,
        max_depth=6,
        progress=lines.append,
    )
    assert len(lines) == 3
    assert (cal.verify_s > 0).all()
    assert (cal.draft_s > 0).all()
    assert cal.fixed_s >= 0
    assert cal.acceptance.shape == (8,)
    assert 0 < cal.acceptance.sum() <= 1
    want, _ = replan(
        cal.acceptance,
        cal.sizes,
        cal.verify_s,
        cal.widths,
        cal.draft_s,
        fixed_s=cal.fixed_s,
        max_depth=6,
    )
    assert (cal.plan.n, cal.plan.d) == (want.n, want.d)
    report = cal.to_dict()
    assert report["plan"]["n"] == cal.plan.n
    assert set(report["verify_s"]) == {1, 2, 4, 8, 16}
    # Prefill models from the acceptance estimate's own forwards: a > 0, b >= 0, per model.
    assert set(cal.prefill_s) == {"target", "draft"}
    assert cal.prefill_s["target"][0] == pytest.approx(float(cal.verify_s[0]))
    assert all(b >= 0 for _, b in cal.prefill_s.values())
    assert cal.generate_s > 0
    job = cal.predict([6, 3], [8, 8])
    assert job.generate_s > 0
    assert job.speculative_s > 0
    assert report["prefill_s"]["target"] == list(cal.prefill_s["target"])
    # Whatever was chosen, the output is still the target's.
    prompt = [7, 7, 3, 1]
    assert gen.generate([prompt], max_new_tokens=10, do_sample=False).new_tokens[0] == hf_greedy(
        target, prompt, 10
    )
    if cal.plan.d > 0:
        assert gen.tree_shape == (cal.plan.n, cal.plan.d)


def _calibration(d: int, s_per_token: float) -> Any:
    from ferrolm.speculative.sequoia import Plan

    return speculative.Calibration(
        Plan(4 if d else 1, d, 2.0 if d else 1.0, s_per_token, 0.3 / s_per_token),
        np.array([0.8]),
        np.array([1, 4]),
        np.array([0.3, 0.33]),
        np.array([1]),
        np.array([0.1]),
        0.0,
        0.3,
        np.ones(d, np.int64),
        0.0,
        0.4,
        {"target": (0.3, 0.03), "draft": (0.1, 0.01)},
    )


def test_predict_adds_both_prefills_to_the_decoding_of_each_prompt() -> None:
    cal = _calibration(d=3, s_per_token=0.2)
    assert cal.prefill("target", 100) == pytest.approx(0.3 + 3.0)
    assert cal.prefill("draft", 100) == pytest.approx(0.1 + 1.0)
    job = cal.predict([100, 10], [48, 1])
    # generate: prefill + 47 steps, then a prompt answered by its prefill alone.
    assert job.generate_s == pytest.approx((3.3 + 47 * 0.4) + (0.3 + 0.3))
    assert job.speculative_s == pytest.approx((3.3 + 1.1 + 47 * 0.2) + (0.6 + 0.2))
    assert job.speedup == pytest.approx(job.generate_s / job.speculative_s)
    # Both pay a prompt's target prefill, speculation its draft prefill too: on a long prompt
    # with a short answer it loses.
    long = cal.predict([5000], [48])
    short = cal.predict([10], [48])
    assert long.speedup < 1 < short.speedup < 0.4 / 0.2
    # Without speculation the draft is never run: no draft prefill.
    plain = _calibration(d=0, s_per_token=0.3)
    assert plain.predict([100], [2]).speculative_s == pytest.approx(3.3 + 0.3)
    assert cal.predict([], []).speedup == 1.0
    with pytest.raises(ValueError, match="new_tokens"):
        cal.predict([1, 2], [3])
    with pytest.raises(ValueError, match="prompt lengths"):
        cal.predict([0], [3])


def test_prefill_costs_fit_the_estimate_timings() -> None:
    from ferrolm.speculative.planner import _prefill_costs
    from ferrolm.speculative.profile import PromptTiming

    # Forwards of a + b * (L + new) with a = 0.3, b = 0.02 (target), 0.1 and 0.005 (draft);
    # generate = prefill(L) + (new - 1) * 0.45.
    rows = [
        PromptTiming(
            L, 16, 0.3 + 0.02 * L + 15 * 0.45, 0.3 + 0.02 * (L + 16), 0.1 + 0.005 * (L + 16)
        )
        for L in (40, 90, 300)
    ]
    prefill, generate_s = _prefill_costs(rows, 0.3, 0.1)
    assert prefill["target"] == pytest.approx((0.3, 0.02))
    assert prefill["draft"] == pytest.approx((0.1, 0.005))
    assert generate_s == pytest.approx(0.45)
    # No decoding measured: no generate cost (the caller falls back to its one-token step).
    assert _prefill_costs([PromptTiming(5, 1, 0.5, 0.4, 0.2)], 0.3, 0.1)[1] is None
    assert _prefill_costs([], 0.3, 0.1) == ({}, None)


def test_calibrate_costs_checks_widths(pair: tuple[Any, Any]) -> None:
    target, draft = pair
    with pytest.raises(ValueError, match="widths"):
        calibrate_costs(target, draft, [[1, 2, 3]], widths=(0,), max_new_tokens=2)
    _ = torch  # the module is torch-only


@pytest.mark.parametrize("weights", ["bfloat16", "int8"])
def test_low_precision_draft_weights_keep_the_targets_output(
    pair: tuple[Any, Any], weights: str
) -> None:
    target, draft = pair
    before = {k: v.clone() for k, v in draft.state_dict().items()}
    gen = speculative.SpeculativeGenerator(
        target, draft, method="sequoia", budget=8, draft_weights=weights
    )
    prompt = [9, 8, 7, 6, 5]
    out = gen.generate([prompt], max_new_tokens=12, do_sample=False)
    assert out.new_tokens[0] == hf_greedy(target, prompt, 12)
    after = draft.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(v.dtype == torch.float32 for v in after.values())
    with pytest.raises(ValueError, match="draft_weights"):
        speculative.SpeculativeGenerator(target, draft, draft_weights="int4")
    with pytest.raises(ValueError, match="fast_linear"):
        speculative.SpeculativeGenerator(target, draft, draft_weights=weights, fast_linear=False)


def test_route_linear_bfloat16_copies_are_reused_until_the_weight_changes() -> None:
    from ferrolm.speculative.fast_linear import _COPIES

    torch.manual_seed(0)
    layer = torch.nn.Linear(40, 24)
    x = torch.randn(3, 40)
    with torch.no_grad():
        want = torch.nn.functional.linear(
            x.double(), layer.weight.bfloat16().double(), layer.bias.double()
        )
        with speculative.route_linear(layer, weights=torch.bfloat16):
            got = layer(x)
            first = _COPIES[id(layer.weight)][4]
        assert torch.allclose(got.double(), want, atol=1e-5)
        assert first.dtype == torch.bfloat16
        with speculative.route_linear(layer, weights=torch.bfloat16):
            assert _COPIES[id(layer.weight)][4] is first
        layer.weight.mul_(2)
        with speculative.route_linear(layer, weights=torch.bfloat16):
            got = layer(x)
        assert _COPIES[id(layer.weight)][4] is not first
        assert torch.allclose(
            got.double(),
            torch.nn.functional.linear(
                x.double(), layer.weight.bfloat16().double(), layer.bias.double()
            ),
            atol=1e-5,
        )
    assert "forward" not in layer.__dict__
    with (
        pytest.raises(TypeError, match="weights"),
        speculative.route_linear(layer, weights=torch.float16),
    ):
        pass


def test_a_tree_shape_of_depth_zero_never_runs_the_draft(pair: tuple[Any, Any]) -> None:
    target, draft = pair
    # Built first: the constructor probes both models' tree masks once.
    gens = [
        speculative.SpeculativeGenerator(target, draft, method=method, tree_shape=(1, 0))
        for method in ("specexec", "sequoia", "chain")
    ]
    calls = _Calls(draft)
    for gen in gens:
        prompt = [4, 8, 15, 16, 23, 42]
        out = gen.generate([prompt], max_new_tokens=9, do_sample=False)
        assert out.new_tokens[0] == hf_greedy(target, prompt, 9)
        assert out.stats.draft_forwards == 0
        assert out.stats.tau == pytest.approx(1.0)
    assert calls.n == 0


def test_extension_prices_the_gate_and_the_floor_from_the_calibration() -> None:
    from ferrolm.speculative.planner import extension

    cal = _calibration(d=3, s_per_token=0.2)
    # dv: verify(4) = 0.33 and the curve ends there, so growth costs nothing to verify; the
    # gate is t_d / (p1 * s_per_token) = 0.1 / (0.8 * 0.2).
    extra, gate, floor = extension(cal, 4)
    assert extra == 4
    assert gate == pytest.approx(math.log(0.1 / 0.16))
    assert floor == -math.inf
    steep = dataclasses.replace(
        cal, sizes=np.array([1, 4, 8]), verify_s=np.array([0.3, 0.33, 0.41])
    )
    extra, gate, floor = extension(steep, 4)
    assert gate == pytest.approx(math.log((0.1 + 0.02) / 0.16))
    assert floor == pytest.approx(math.log(0.02 / 0.2))
    assert extension(cal, 0) == (0, 0.0, -math.inf)
    assert extension(_calibration(d=0, s_per_token=0.3), 4) == (0, 0.0, -math.inf)
    # A draft forward dearer than what a sure token saves: never extend.
    dear = dataclasses.replace(cal, draft_s=np.array([0.5]))
    assert extension(dear, 4) == (0, 0.0, -math.inf)


def test_confidence_gated_growth_goes_deeper_and_keeps_the_targets_output(
    pair: tuple[Any, Any],
) -> None:
    target, draft = pair
    prompt = [3, 1, 4, 1, 5, 9, 2, 6]
    want = hf_greedy(target, prompt, 16)
    depths = {}
    for gate in (0.0, -math.inf):  # probability 1 (never) and 0 (always)
        gen = speculative.SpeculativeGenerator(
            target,
            draft,
            method="specexec",
            budget=40,
            max_depth=6,
            max_width=2,
            max_draft_steps=1,
        )
        gen._extend = (4, gate, -math.inf)
        seen: list[int] = []
        real = gen._drafter

        def drafter(*args: Any, real: Any = real, seen: list[int] = seen) -> Any:
            d = real(*args)
            inner = d.draft

            def draft(*a: Any) -> Any:
                out = inner(*a)
                seen.extend(int(x.tree.depth.max()) for x in out)
                return out

            d.draft = draft
            return d

        gen._drafter = drafter  # type: ignore[method-assign]
        out = gen.generate([prompt], max_new_tokens=16, do_sample=False)
        assert out.new_tokens[0] == want
        depths[gate] = max(seen)
    # One planned forward after the root reaches depth 2; the open gate adds up to 4 levels.
    assert depths[0.0] <= 2
    assert depths[-math.inf] > 2
