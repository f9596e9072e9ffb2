"""The real-pair comparison behind `ferrolm demo` and the bench, run on a tiny pair."""

from __future__ import annotations

import json

import pytest
import torch

from ferrolm._demo.generate import tiny_pair
from ferrolm.testing.spec_real import compare, load_prompts


def test_shipped_prompts_are_one_per_spec_bench_category() -> None:
    prompts = load_prompts()
    assert len(prompts) == 13
    assert len({c for c, _ in prompts}) == 13
    assert all(len(text) > 20 for _, text in prompts)


def test_a_question_jsonl_file_is_read_per_category(tmp_path) -> None:
    lines = [{"category": c, "turns": [f"{c} {i}"]} for c in ("a", "b") for i in range(3)]
    path = tmp_path / "question.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines))
    assert load_prompts(path, per_category=1, skip=1) == [("a", "a 1"), ("b", "b 1")]


def test_compare_checks_every_output_and_reports_the_plan() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        target, draft = tiny_pair(layers=2, positions=256, noise=0.1)
        prompts = [("x", [1, 17, 42, 99, 7]), ("y", [5, 6, 7])]
        lines: list[str] = []
        results = compare(
            target,
            draft,
            prompts,
            [("z", [3, 4, 5, 6])],
            new_tokens=8,
            methods=("plain", "specexec@6x3", "specexec", "sequoia"),
            log=lines.append,
        )
    finally:
        torch.set_num_threads(threads)
    baseline, assisted, plain, fixed, *ours = results
    # A fixed tree runs uncalibrated: no plan, no prediction, the same outputs.
    assert fixed.name == "ferrolm specexec, fixed budget 6, depth 3"
    assert (fixed.matches, fixed.new_tokens) == (2, 16)
    assert fixed.predicted_speedup is None
    assert fixed.plan is None
    assert fixed.tau > 1.0
    assert plain.name == "ferrolm, no speculation"
    assert plain.matches == 2
    assert plain.tau == pytest.approx(1.0)
    assert plain.predicted_speedup is None
    assert baseline.tau == pytest.approx(1.0)
    assert baseline.new_tokens == 16
    for r in [assisted, plain, *ours]:
        assert r.matches == 2, r.name
        assert r.new_tokens == 16
    for r in ours:
        assert r.predicted_speedup is not None
        assert r.predicted_speedup > 0
        row = r.to_dict(baseline, assisted)
        assert row["identical_outputs"] == "2/2"
        # The prediction is for the whole job: each prompt's prefill, then its decoding.
        cal = row["plan"]
        (a_t, b_t), (a_d, b_d) = cal["prefill_s"]["target"], cal["prefill_s"]["draft"]
        spt, speculates = cal["plan"]["s_per_token"], cal["plan"]["d"] > 0
        base = sum(a_t + b_t * len(ids) + 7 * cal["generate_s"] for _, ids in prompts)
        spec = sum(
            a_t + b_t * len(ids) + speculates * (a_d + b_d * len(ids)) + 7 * spt
            for _, ids in prompts
        )
        assert r.predicted_speedup == pytest.approx(base / spec)
    assert any("calibrate specexec" in line for line in lines)


@pytest.mark.parametrize(
    ("preset", "torch_first", "want"),
    [(None, False, "PASSIVE"), ("ACTIVE", False, "ACTIVE"), (None, True, None)],
)
def test_generate_and_demo_quiet_openmp_unless_told_or_too_late(
    preset: str | None, torch_first: bool, want: str | None
) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if preset is not None:
        env["OMP_WAIT_POLICY"] = preset
    code = (
        ("import torch\n" if torch_first else "")
        + "import os\nfrom ferrolm.cli import quiet_openmp_threads\nquiet_openmp_threads()\n"
        + "print(os.environ.get('OMP_WAIT_POLICY'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == str(want)


def test_draft_options_report_cost_and_acceptance_of_each_weight_option() -> None:
    from ferrolm.speculative import estimate_acceptance
    from ferrolm.testing.spec_real import draft_options

    target, draft = tiny_pair(layers=2, positions=256, noise=0.1)
    prompts = [[1, 17, 42, 99, 7], [5, 6, 7]]
    before = {k: v.clone() for k, v in draft.state_dict().items()}
    rows = draft_options(target, draft, prompts, widths=(1, 4), new_tokens=8, repeats=1)
    assert [r["option"] for r in rows] == ["float32", "bfloat16", "int8"]
    want = estimate_acceptance(target, draft, prompts, max_new_tokens=8)
    for r in rows:
        assert r["widths"] == [1, 4]
        assert all(t > 0 for t in r["seconds"])
        assert 0 <= sum(r["acceptance"]) <= 1 + 1e-9
        p1 = r["acceptance"][0]
        assert r["chain3"] == pytest.approx(1 + p1 + p1**2 + p1**3)
    # float32 through the kernel: the unrouted estimate's ranks, up to one near-tie.
    assert abs(rows[0]["acceptance"][0] - want[0]) <= 1 / 16 + 1e-9
    after = draft.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
