"""Speculative decoding core: draft trees, SpecExec growth, Sequoia's DP, lossless verification.

Example:
    >>> import numpy as np, torch
    >>> from ferrolm import speculative
    >>> table = speculative.sequoia_dp([0.6, 0.2, 0.1], max_nodes=32, max_depth=6)
    >>> tree = table.tree(8, 4)                      # optimal static shape, tokens = -1
    >>> mask = speculative.ancestor_mask(tree.parents)      # bool [8, 8] tree attention
    >>> pos = speculative.position_ids(tree.parents, past_len=100)
    >>> choice = speculative.choose_greedy(torch.randn(8, 50))
    >>> path, bonus = speculative.walk(tree.parents, np.zeros(8, np.int32), choice)
"""

from typing import TYPE_CHECKING

from ferrolm._optional import lazy_attributes
from ferrolm.speculative.builder import BatchTreeBuilder, TreeBuilder
from ferrolm.speculative.sequoia import (
    Plan,
    SequoiaTable,
    acceptance_vector,
    draft_level_widths,
    load_acceptance_vector,
    plan,
    sequoia_dp,
    sequoia_heap,
    tree_value,
)
from ferrolm.speculative.tree import (
    Tree,
    ancestor_mask,
    ancestor_mask_batch,
    children_table,
    forest_children_table,
    kv_compaction,
    leaf_paths,
    position_ids,
    remap_compaction,
    validate_parents,
    walk,
    walk_batch,
)

if TYPE_CHECKING:
    from ferrolm.speculative.fast_linear import linear, route_linear
    from ferrolm.speculative.generator import DEFAULT_ACCEPTANCE, SpeculativeGenerator
    from ferrolm.speculative.planner import Calibration, calibrate_costs
    from ferrolm.speculative.profile import (
        LatencyProfile,
        PromptTiming,
        estimate_acceptance,
        profile,
    )
    from ferrolm.speculative.sampling import sampling_probs
    from ferrolm.speculative.stats import GenerationStats, SpeculativeOutput
    from ferrolm.speculative.verify import choose_greedy, choose_sample, choose_sequoia

# The trees, the builders and Sequoia need NumPy only; what works on logits and models needs
# torch and is imported on first use (an ImportError naming the `torch` extra without it).
__getattr__ = lazy_attributes(
    __name__,
    {
        "DEFAULT_ACCEPTANCE": "generator",
        "SpeculativeGenerator": "generator",
        "Calibration": "planner",
        "calibrate_costs": "planner",
        "linear": "fast_linear",
        "route_linear": "fast_linear",
        "LatencyProfile": "profile",
        "PromptTiming": "profile",
        "estimate_acceptance": "profile",
        "profile": "profile",
        "sampling_probs": "sampling",
        "GenerationStats": "stats",
        "SpeculativeOutput": "stats",
        "choose_greedy": "verify",
        "choose_sample": "verify",
        "choose_sequoia": "verify",
    },
)

__all__ = [
    "DEFAULT_ACCEPTANCE",
    "BatchTreeBuilder",
    "Calibration",
    "GenerationStats",
    "LatencyProfile",
    "Plan",
    "PromptTiming",
    "SequoiaTable",
    "SpeculativeGenerator",
    "SpeculativeOutput",
    "Tree",
    "TreeBuilder",
    "acceptance_vector",
    "ancestor_mask",
    "ancestor_mask_batch",
    "calibrate_costs",
    "children_table",
    "choose_greedy",
    "choose_sample",
    "choose_sequoia",
    "draft_level_widths",
    "estimate_acceptance",
    "forest_children_table",
    "kv_compaction",
    "leaf_paths",
    "linear",
    "load_acceptance_vector",
    "plan",
    "position_ids",
    "profile",
    "remap_compaction",
    "route_linear",
    "sampling_probs",
    "sequoia_dp",
    "sequoia_heap",
    "tree_value",
    "validate_parents",
    "walk",
    "walk_batch",
]
