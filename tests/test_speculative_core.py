"""ferrolm.speculative core: tree helpers, TreeBuilder, Sequoia DP, and lossless verification.

Everything is checked against plain NumPy / Python references; verification rules are checked
statistically (chi-square over many seeded trials), including a deliberately wrong rule that the
same test must reject.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from ferrolm import speculative
from ferrolm.testing.speculative import numpy_sequoia_dp

ACCEPTANCE = speculative.load_acceptance_vector(
    __import__("pathlib").Path(speculative.__file__).with_name("sequoia_acceptance_vector.txt")
)


# ----------------------------------------------------------------------------- references
@st.composite
def trees(draw, max_n: int = 80) -> np.ndarray:
    n = draw(st.integers(1, max_n))
    raw = draw(st.lists(st.integers(0, 10**6), min_size=n - 1, max_size=n - 1))
    return np.array([-1] + [r % (i + 1) for i, r in enumerate(raw)], dtype=np.int32)


def ref_mask(parents: np.ndarray) -> np.ndarray:
    n = len(parents)
    m = np.zeros((n, n), dtype=bool)
    for i in range(n):
        j = i
        while j >= 0:
            m[i, j] = True
            j = parents[j]
    return m


def ref_depth(parents: np.ndarray) -> np.ndarray:
    d = np.zeros(len(parents), dtype=np.int64)
    for i in range(1, len(parents)):
        d[i] = d[parents[i]] + 1
    return d


def ref_walk(parents, tokens, choice):
    cur, path = 0, [0]
    while True:
        kids = [c for c in range(len(parents)) if parents[c] == cur and tokens[c] == choice[cur]]
        if not kids:
            return path, int(choice[cur])
        cur = kids[0]
        path.append(cur)


# ----------------------------------------------------------------------------- tree helpers
@settings(max_examples=60, deadline=None)
@given(trees())
def test_mask_positions_and_ranks_match_numpy_reference(parents):
    np.testing.assert_array_equal(speculative.ancestor_mask(parents), ref_mask(parents))
    np.testing.assert_array_equal(speculative.position_ids(parents, 7), 7 + ref_depth(parents))
    t = speculative.Tree.from_parents(parents)
    ranks = [
        sum(parents[j] == parents[i] for j in range(1, i)) if i else 0 for i in range(len(parents))
    ]
    np.testing.assert_array_equal(t.rank, ranks)
    assert speculative.position_ids(parents, 0).dtype == np.int64


@settings(max_examples=60, deadline=None)
@given(trees(40), st.integers(0, 2**31))
def test_walk_matches_reference(parents, seed):
    rng = np.random.default_rng(seed)
    n = len(parents)
    tokens = rng.integers(0, 3, n).astype(np.int32)
    choice = rng.integers(0, 3, n).astype(np.int64)
    path, bonus = speculative.walk(parents, tokens, choice)
    assert (path.tolist(), bonus) == ref_walk(parents, tokens, choice)


@settings(max_examples=30, deadline=None)
@given(st.lists(trees(20), min_size=1, max_size=5))
def test_batch_mask_and_walk_equal_per_tree_results(forest):
    flat = np.concatenate(forest)
    offsets = np.cumsum([0] + [len(t) for t in forest])
    masks = speculative.ancestor_mask_batch(flat, offsets)
    m = max(len(t) for t in forest)
    assert masks.shape == (len(forest), m, m)
    tokens = np.zeros(len(flat), np.int32)
    choice = np.zeros(len(flat), np.int64)
    paths, path_off, bonus = speculative.walk_batch(flat, offsets, tokens, choice)
    for b, t in enumerate(forest):
        n = len(t)
        np.testing.assert_array_equal(masks[b, :n, :n], ref_mask(t))
        assert not masks[b, n:].any()
        assert not masks[b, :, n:].any()
        p, bo = speculative.walk(t, tokens[:n], choice[:n])
        np.testing.assert_array_equal(paths[path_off[b] : path_off[b + 1]], p)
        assert bonus[b] == bo


def test_children_table_leaf_paths_and_compaction():
    parents = np.array([-1, 0, 0, 1, 1, 2], dtype=np.int32)
    np.testing.assert_array_equal(
        speculative.children_table(parents), [[1, 2], [3, 4], [5, -1], [-1, -1], [-1, -1], [-1, -1]]
    )
    np.testing.assert_array_equal(
        speculative.leaf_paths(parents), [[0, 1, 3], [0, 1, 4], [0, 2, 5]]
    )
    src, dst = speculative.kv_compaction(np.array([0, 2, 5]), past_len=10)
    assert src.tolist() == [12, 15]
    assert dst.tolist() == [11, 12]
    # a cache laid out by builder ids, compacted to the finalized order
    src, dst = speculative.remap_compaction(np.array([0, -1, 2, 1]), past_len=4)
    assert src.tolist() == [4, 7, 6]
    assert dst.tolist() == [4, 5, 6]
    forest = speculative.forest_children_table(np.array([-1, 0, -1, 0, 0]), np.array([0, 2, 5]))
    np.testing.assert_array_equal(forest, [[1, -1], [-1, -1], [3, 4], [-1, -1], [-1, -1]])


@settings(max_examples=40, deadline=None)
@given(st.lists(trees(30), min_size=1, max_size=4), st.integers(0, 2**31))
def test_subtree_ancestors_and_child_order_match_python_loops(forest, seed):
    from ferrolm.speculative import tree as tree_mod

    rng = np.random.default_rng(seed)
    for parents in forest:
        n = len(parents)
        keep = rng.random(n) < 0.7
        closed = keep.copy()
        closed[0] = True
        for i in range(1, n):
            closed[i] = closed[i] and closed[parents[i]]
        old, sub = tree_mod.restrict(parents, keep)
        np.testing.assert_array_equal(old, np.flatnonzero(closed))
        new_of = {int(o): k for k, o in enumerate(old)}
        assert sub.tolist() == [-1] + [new_of[int(parents[o])] for o in old[1:]]
        t = speculative.Tree.from_parents(parents, tokens=np.arange(n) + 100)
        small, old64 = tree_mod.subtree(t, keep)
        np.testing.assert_array_equal(small.tokens, t.tokens[old64])
        np.testing.assert_array_equal(small.rank, t.rank[old64])
        assert tree_mod.subtree(t, np.ones(n, bool))[0] is t

        nodes = rng.integers(0, n, 5).astype(np.int32)
        offsets, anc = tree_mod.ancestors(parents, nodes)
        for k, node in enumerate(nodes):
            want, p = [], int(parents[node])
            while p >= 0:
                want.append(p)
                p = int(parents[p])
            assert anc[offsets[k] : offsets[k + 1]].tolist() == want

        rank = rng.integers(0, 4, n).astype(np.int32)
        offsets, kids = tree_mod.children_by_rank(parents, rank)
        for i in range(n):
            want = sorted((c for c in range(1, n) if parents[c] == i), key=lambda c: rank[c])
            assert kids[offsets[i] : offsets[i + 1]].tolist() == want

    flat = np.concatenate(forest)
    offsets = np.cumsum([0] + [len(t) for t in forest])
    table = speculative.forest_children_table(flat, offsets)
    width = max(max(np.bincount(t[1:], minlength=len(t)).max(initial=0), 1) for t in forest)
    assert table.shape == (len(flat), width)
    for b, t in enumerate(forest):
        one = speculative.children_table(t)
        block = table[offsets[b] : offsets[b + 1], : one.shape[1]]
        np.testing.assert_array_equal(block, np.where(one >= 0, one + offsets[b], -1))
        assert (table[offsets[b] : offsets[b + 1], one.shape[1] :] == -1).all()


@pytest.mark.parametrize(
    ("parents", "message"),
    [
        ([], "non-empty"),
        ([0, 0], "-1 at index 0"),
        ([-1, 0, -1], "single root"),
        ([-1, 7], r"\[0, 2\)"),
        ([-1, 2, 1], "cycle"),
        ([-1, 2, 0], "topological"),
    ],
)
def test_bad_trees_raise_value_errors_that_say_why(parents, message):
    with pytest.raises(ValueError, match=message):
        speculative.ancestor_mask(np.array(parents, dtype=np.int32))


def test_bad_argument_types_and_values():
    with pytest.raises(TypeError, match="parents"):
        speculative.ancestor_mask(np.array([-1.0, 0.0]))
    with pytest.raises(ValueError, match="1-D"):
        speculative.ancestor_mask(np.zeros((2, 2), np.int32))
    with pytest.raises(ValueError, match="past_len"):
        speculative.position_ids([-1, 0], -1)
    with pytest.raises(ValueError, match="choice"):
        speculative.walk([-1, 0], [1, 2], [0])
    with pytest.raises(ValueError, match="offsets"):
        speculative.ancestor_mask_batch([-1, 0, -1], [0, 2, 4])
    with pytest.raises(ValueError, match="path"):
        speculative.kv_compaction([1, 2], 0)


# ----------------------------------------------------------------------------- TreeBuilder
class RefBuilder:
    """Plain reference: after each expansion keep the top-`budget` of old nodes + candidates."""

    def __init__(self, budget, max_width, log_decay, max_depth):
        self.budget, self.max_width, self.decay, self.max_depth = (
            budget,
            max_width,
            log_decay,
            max_depth,
        )
        self.nodes = [[0.0, True, 0]]  # score (float32), alive, depth

    def step(self, parents, lps):
        made = {}
        cands = []
        for r, p in enumerate(parents):
            score, alive, depth = self.nodes[p]
            if not alive or depth >= self.max_depth:
                continue
            order = sorted(range(lps.shape[1]), key=lambda c: (-lps[r, c], c))[: self.max_width]
            for c in order:
                s = np.float32(np.float32(score + np.float32(self.decay)) + lps[r, c])
                cands.append((s, depth + 1, r * lps.shape[1] + c))
        alive = [(n[0], i) for i, n in enumerate(self.nodes) if n[1]]
        for s, d, flat in cands:
            made[flat] = len(self.nodes)
            alive.append((s, len(self.nodes)))
            self.nodes.append([s, False, d])
        alive.sort(key=lambda x: -x[0])
        for n in self.nodes:
            n[1] = False
        for _, i in alive[: self.budget]:
            self.nodes[i][1] = True
        return made

    def scores(self):
        return sorted((n[0] for n in self.nodes if n[1]), reverse=True)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 30),
    st.integers(1, 4),
    st.sampled_from([0.0, -0.3]),
    st.lists(st.integers(1, 5), min_size=1, max_size=6),
    st.integers(0, 2**31),
)
def test_builder_keeps_the_budget_best_scores_in_an_ancestor_closed_tree(
    budget, width, decay, ks, seed
):
    rng = np.random.default_rng(seed)
    w = 4
    b = speculative.TreeBuilder(3, budget, max_depth=4, max_width=width, log_decay=decay)
    ref = RefBuilder(budget, width, decay, 4)
    ref_of = [0]
    tokens_of = {0: 3}
    for k in ks:
        front = b.frontier(k)
        if len(front) == 0:
            break
        lps = np.log(
            rng.dirichlet(np.ones(w) * 0.5, size=len(front)).astype(np.float32) + 1e-6
        ).astype(np.float32)
        lps -= np.arange(lps.size, dtype=np.float32).reshape(lps.shape) * 1e-4  # no ties
        toks = np.tile(np.arange(w), (len(front), 1)) + 10 * np.arange(1, len(front) + 1)[:, None]
        ids = b.expand(front, toks, lps)
        made = ref.step([ref_of[f] for f in front], lps)
        for flat in np.argsort(ids, axis=None):
            old = ids.flat[flat]
            if old >= 0:
                assert old == len(ref_of)
                ref_of.append(made[int(flat)])
                tokens_of[int(old)] = int(toks.flat[flat])
    tree, old_to_new = b.finalize()
    assert tree.size == b.size <= budget
    speculative.validate_parents(tree.parents)
    np.testing.assert_array_equal(tree.depth, ref_depth(tree.parents))
    assert sorted(b.scores().tolist(), reverse=True) == pytest.approx(ref.scores(), abs=0)
    for old, new in enumerate(old_to_new):
        if new >= 0:
            assert tree.tokens[new] == tokens_of[old]
    assert sorted(old_to_new[old_to_new >= 0].tolist()) == list(range(tree.size))


def test_builder_bad_inputs():
    with pytest.raises(ValueError, match="budget"):
        speculative.TreeBuilder(0, budget=0)
    with pytest.raises(ValueError, match="log_decay"):
        speculative.TreeBuilder(0, budget=4, log_decay=0.5)
    b = speculative.TreeBuilder(0, budget=4)
    with pytest.raises(ValueError, match="child_logprobs"):
        b.expand([0], [[1, 2]], [[math.nan, -1.0]])
    with pytest.raises(ValueError, match="child_logprobs"):
        b.expand([0], [[1, 2]], [[math.inf, -1.0]])
    with pytest.raises(ValueError, match="parent_ids"):
        b.expand([5], [[1, 2]], [[-0.1, -1.0]])
    with pytest.raises(ValueError, match="shape"):
        b.expand([0], [[1, 2]], [[-0.1]])
    with pytest.raises(TypeError, match="child_tokens"):
        b.expand([0], [[1.0, 2.0]], [[-0.1, -1.0]])
    assert b.size == 1  # nothing changed
    b.expand([0], torch.tensor([[1, 2]]), torch.tensor([[-0.1, -1.0]]))
    with pytest.raises(ValueError, match="already expanded"):
        b.expand([0], [[3]], [[-0.1]])


def test_batch_builder_matches_single_builders():
    rng = np.random.default_rng(0)
    batch = speculative.BatchTreeBuilder([5, 6, 7], budget=12, max_width=3)
    singles = [speculative.TreeBuilder(t, budget=12, max_width=3) for t in (5, 6, 7)]
    while not batch.done:
        tree_ids, node_ids = batch.frontier(2)
        toks = rng.permuted(np.tile(np.arange(6), (len(node_ids), 1)), axis=1)
        lps = np.log(rng.dirichlet(np.ones(6), size=len(node_ids))).astype(np.float32)
        out = batch.expand(tree_ids, node_ids, toks, lps)
        for t in range(3):
            rows = tree_ids == t
            if rows.any():
                np.testing.assert_array_equal(
                    singles[t].expand(node_ids[rows], toks[rows], lps[rows]), out[rows]
                )
    for (t, m), s in zip(batch.finalize(), singles):
        ts, ms = s.finalize()
        np.testing.assert_array_equal(t.parents, ts.parents)
        np.testing.assert_array_equal(m, ms)
        assert t.size == 12


# ----------------------------------------------------------------------------- Sequoia
def brute_force_value(p, n, d):
    """Best expected accepted nodes over every parent array with parents[i] < i."""
    best = -math.inf
    for choice in itertools.product(*[range(i) for i in range(1, n)]):
        parents = np.array((-1, *choice), dtype=np.int32)
        depth = ref_depth(parents)
        if depth.max() > d:
            continue
        prod = np.ones(n)
        count = np.zeros(n, dtype=int)
        ok = True
        for i in range(1, n):
            r = count[parents[i]]
            count[parents[i]] += 1
            if r >= len(p):
                ok = False
                break
            prod[i] = prod[parents[i]] * p[r]
        if ok:
            best = max(best, prod.sum())
    return best


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.floats(0.0, 1.0), min_size=1, max_size=3),
    st.integers(1, 6),
    st.integers(0, 3),
)
def test_dp_equals_brute_force_over_all_small_trees(raw, n, d):
    p = np.array(raw) / (sum(raw) + 0.1)
    table = speculative.sequoia_dp(p, 6, 3)
    brute = brute_force_value(p, n, d)
    assert table.value(n, d) == pytest.approx(brute, rel=1e-12, abs=1e-12)
    if brute > -math.inf:
        assert speculative.tree_value(p, table.tree(n, d).parents) == pytest.approx(
            brute, rel=1e-12
        )


def test_dp_is_bit_identical_to_the_numpy_recurrence_on_the_sequoia_vector():
    table = speculative.sequoia_dp(ACCEPTANCE, 96, 6)
    np.testing.assert_array_equal(table.values(), numpy_sequoia_dp(ACCEPTANCE, 96, 6))
    t = table.tree(96, 6)
    assert t.size == 96
    assert t.depth.max() <= 6
    assert (t.tokens == -1).all()
    assert speculative.tree_value(ACCEPTANCE, t.parents) == pytest.approx(
        table.value(96, 6), rel=1e-12
    )


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.floats(0.0, 1.0), min_size=1, max_size=6), st.integers(1, 150), st.integers(0, 6)
)
def test_heap_fast_path_equals_dp_for_non_increasing_p(raw, n, d):
    p = np.sort(np.array(raw))[::-1] / (sum(raw) + 0.05)
    table = speculative.sequoia_dp(p, 150, 6)
    tree, values = speculative.sequoia_heap(p, n, d)
    np.testing.assert_allclose(values, table.values()[1 : n + 1, d], rtol=1e-12)
    if values[-1] > -math.inf:
        assert speculative.tree_value(p, tree.parents) == pytest.approx(values[-1], rel=1e-12)


def test_sequoia_bad_inputs():
    with pytest.raises(ValueError, match="non-negative"):
        speculative.sequoia_dp([0.5, -0.1], 8, 2)
    with pytest.raises(ValueError, match="at most 1"):
        speculative.sequoia_dp([0.7, 0.6], 8, 2)
    with pytest.raises(ValueError, match="finite"):
        speculative.sequoia_dp([math.nan], 8, 2)
    with pytest.raises(ValueError, match="max_nodes"):
        speculative.sequoia_dp([0.5], 0, 2)
    table = speculative.sequoia_dp([0.5, 0.2], 8, 2)
    with pytest.raises(ValueError, match="n"):
        table.value(9, 1)
    with pytest.raises(ValueError, match="at most 3 nodes"):
        table.tree(8, 1)
    with pytest.raises(ValueError, match="non-increasing"):
        speculative.sequoia_heap([0.1, 0.5], 4, 2)
    with pytest.raises(ValueError, match="sizes"):
        speculative.plan(table, [9], [1.0], 0.1)


def test_plan_and_acceptance_estimate():
    table = speculative.sequoia_dp(ACCEPTANCE, 128, 8)
    sizes = [1, 16, 64, 128]
    t_verify = [0.020, 0.021, 0.024, 0.030]
    best = speculative.plan(table, sizes, t_verify, t_draft_s=0.002)
    costs = {
        (n, d): (d * 0.002 + tv) / table.value(n, d)
        for n, tv in zip(sizes, t_verify)
        for d in range(9)
        if table.value(n, d) > 0
    }
    assert min(costs, key=costs.get) == (best.n, best.d)
    assert best.speedup == pytest.approx(0.020 / best.s_per_token)
    rng = np.random.default_rng(0)
    ranks = rng.choice(np.arange(-1, 4), size=200_000, p=[0.1, 0.5, 0.25, 0.1, 0.05])
    np.testing.assert_allclose(
        speculative.acceptance_vector(ranks, 4), [0.5, 0.25, 0.1, 0.05], atol=5e-3
    )
    with pytest.raises(ValueError, match="accepted_ranks"):
        speculative.acceptance_vector([4], 4)


# ----------------------------------------------------------------------------- verification
VOCAB = 4
TARGET = np.array(
    [
        [0.40, 0.30, 0.20, 0.10],
        [0.10, 0.20, 0.30, 0.40],
        [0.25, 0.25, 0.25, 0.25],
        [0.55, 0.05, 0.30, 0.10],
    ]
)
DRAFT = np.array(
    [
        [0.20, 0.20, 0.50, 0.10],
        [0.40, 0.10, 0.10, 0.40],
        [0.10, 0.60, 0.20, 0.10],
        [0.30, 0.30, 0.30, 0.10],
    ]
)
SHAPE = np.array([-1, 0, 0, 0, 1, 1, 2, 2, 3, 3], dtype=np.int32)  # 3 root children, 2 each


def wrong_rule(parents, tokens, target, draft, generator, replacement, offsets):
    """SpecInfer's acceptance test without the residual: the fallback samples the target itself."""
    table = torch.from_numpy(speculative.forest_children_table(parents, offsets).astype(np.int64))
    tok = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
    n = target.shape[0]
    rows = torch.arange(n)
    accepted = torch.zeros(n, dtype=torch.bool)
    choice = torch.zeros(n, dtype=torch.int64)
    for j in range(table.shape[1]):
        x = tok[table[:, j].clamp(min=0)]
        u = torch.rand(n, generator=generator)
        take = (table[:, j] >= 0) & ~accepted & (u * draft[rows, x] < target[rows, x])
        choice = torch.where(take, x, choice)
        accepted |= take
    return torch.where(
        accepted, choice, torch.multinomial(target, 1, generator=generator).squeeze(1)
    )


def draft_children(roots: torch.Tensor, k: int, mode: str, g: torch.Generator) -> torch.Tensor:
    q = torch.from_numpy(DRAFT)[roots]
    if mode == "sample":  # SpecExec: deterministic top-k of the draft
        return q.argsort(-1, descending=True)[:, :k]
    return torch.multinomial(q, k, replacement=(mode == "specinfer"), generator=g)


def first_two_tokens(mode: str, trials: int, seed: int, rule=None) -> np.ndarray:
    """Runs speculative steps from context token 0 until each trial produced two tokens."""
    g = torch.Generator().manual_seed(seed)
    out = np.full((trials, 2), -1)
    filled = np.zeros(trials, dtype=int)
    context = np.zeros(trials, dtype=np.int64)
    target = torch.from_numpy(TARGET)
    draft = torch.from_numpy(DRAFT)
    while (filled < 2).any():
        idx = np.nonzero(filled < 2)[0]
        t = len(idx)
        roots = torch.from_numpy(context[idx])
        level1 = draft_children(roots, 3, mode, g)  # [t, 3]
        level2 = draft_children(level1.reshape(-1), 2, mode, g).reshape(t, 6)
        tokens = (
            torch.cat([roots[:, None], level1, level2], 1).numpy().astype(np.int32)
        )  # SHAPE order
        flat_tokens = tokens.reshape(-1)
        parents = np.tile(SHAPE, t)
        offsets = np.arange(t + 1, dtype=np.int64) * len(SHAPE)
        node_target = target[flat_tokens]
        node_draft = draft[flat_tokens]
        if mode == "sample":
            choice = speculative.choose_sample(node_target, g)
        else:
            fn = rule or speculative.choose_sequoia
            choice = fn(
                parents, flat_tokens, node_target, node_draft, g, mode == "specinfer", offsets
            )
        paths, path_off, bonus = speculative.walk_batch(
            parents, offsets, flat_tokens, choice.numpy()
        )
        for j, trial in enumerate(idx):
            path = paths[path_off[j] + 1 : path_off[j + 1]]
            new = [*tokens[j, path].tolist(), int(bonus[j])]
            for tok in new:
                if filled[trial] < 2:
                    out[trial, filled[trial]] = tok
                    filled[trial] += 1
            context[trial] = new[-1]
    return out


def chi_square_p_value(pairs: np.ndarray) -> float:
    counts = np.bincount(pairs[:, 0] * VOCAB + pairs[:, 1], minlength=VOCAB * VOCAB)
    expected = len(pairs) * (TARGET[0][:, None] * TARGET).reshape(-1)
    return float(stats.chisquare(counts, expected).pvalue)


TRIALS = 30_000


@pytest.mark.parametrize("mode", ["sample", "sequoia", "specinfer"])
def test_every_verification_rule_reproduces_the_target_distribution(mode):
    pairs = first_two_tokens(mode, TRIALS, seed=1234)
    assert chi_square_p_value(pairs) > 1e-3


def specinfer_rule_on_sequoia_drafts(parents, tokens, target, draft, generator, _repl, offsets):
    """Wrong for children drawn without replacement: keeps the draft's full distribution."""
    return speculative.choose_sequoia(parents, tokens, target, draft, generator, True, offsets)


@pytest.mark.parametrize(
    ("mode", "rule"),
    [("specinfer", wrong_rule), ("sequoia", specinfer_rule_on_sequoia_drafts)],
)
def test_the_statistical_test_rejects_wrong_rules(mode, rule):
    pairs = first_two_tokens(mode, TRIALS, seed=1234, rule=rule)
    assert chi_square_p_value(pairs) < 1e-6


def test_greedy_verification_reproduces_greedy_decoding():
    logits = torch.from_numpy(np.log(TARGET))
    greedy = [0]
    for _ in range(3):
        greedy.append(int(np.argmax(TARGET[greedy[-1]])))
    parents = SHAPE
    tokens = np.array([0, 0, 3, 2, 0, 3, 0, 1, 2, 1], dtype=np.int32)  # holds 0 -> 0 -> 0
    choice = speculative.choose_greedy(logits[tokens])
    path, bonus = speculative.walk(parents, tokens, choice)
    generated = [*tokens[path[1:]].tolist(), bonus]
    assert generated == greedy[1 : 1 + len(generated)]
    assert len(generated) == 3  # two accepted draft tokens plus the bonus


def test_verification_bad_inputs():
    p = torch.full((3, 4), 0.25)
    with pytest.raises(TypeError, match="target_logits"):
        speculative.choose_greedy(torch.zeros(3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="target_probs"):
        speculative.choose_sample(-p)
    with pytest.raises(ValueError, match="draft_probs"):
        speculative.choose_sequoia([-1, 0, 0], [0, 1, 2], p, torch.full((3, 5), 0.2))
    with pytest.raises(ValueError, match="tokens"):
        speculative.choose_sequoia([-1, 0, 0], [0, 1, 9], p, p)
    with pytest.raises(ValueError, match="parents"):
        speculative.choose_sequoia([-1, 0], [0, 1, 2], p, p)


@pytest.mark.gpu
def test_sequoia_rule_runs_on_gpu_and_matches_cpu_greedy_limits():
    # with draft == target every first child is accepted, on any device
    p = torch.softmax(torch.randn(10, 32), -1)
    parents = SHAPE
    tokens = np.arange(10, dtype=np.int32)
    g = torch.Generator(device="cuda").manual_seed(0)
    choice = speculative.choose_sequoia(parents, tokens, p.cuda(), p.cuda(), g)
    assert choice.device.type == "cpu"
    assert choice.shape == (10,)
    np.testing.assert_array_equal(speculative.choose_greedy(p.cuda()), speculative.choose_greedy(p))
