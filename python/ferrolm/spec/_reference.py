"""Plain NumPy / torch references of the spec-core algorithms, for tests, benches and the demo.

They are written for clarity and as baselines; the library itself uses the Rust core.
"""

from __future__ import annotations

import numpy as np


def numpy_sequoia_dp(p: np.ndarray, max_nodes: int, max_depth: int) -> np.ndarray:
    """Sequoia's DP in NumPy, vectorised over the split.

    Returns ``F`` as ``[max_nodes + 1, max_depth + 1]``.

    Same recurrence and the same feasible split range as the Rust core:
    ``T[m][l][b] = max_y T[y][l][b-1] + p_b F[m-y][l-1]``.
    """
    p = np.asarray(p, dtype=np.float64)
    width = len(p)
    n1 = max_nodes + 1
    cap = [1] * (max_depth + 1)
    for level in range(1, max_depth + 1):
        cap[level] = min(max_nodes, 1 + width * cap[level - 1])
    t = np.full((max_depth + 1, width + 1, n1), -np.inf)
    f = np.full((max_depth + 1, n1), -np.inf)
    t[:, 0, 1] = 1.0
    f[0, 1] = 1.0
    for level in range(1, max_depth + 1):
        c = cap[level - 1]
        prev_f = f[level - 1]
        for b in range(1, width + 1):
            pb = p[b - 1]
            prev_t = t[level, b - 1]
            out = t[level, b]
            first_cap = 1 + (b - 1) * c
            for m in range(2, n1):
                lo = max(b, m - c)
                hi = min(m - 1, first_cap)
                if lo > hi:
                    continue
                # y = lo..hi; the last subtree holds m - y nodes: m-lo down to m-hi
                out[m] = np.max(prev_t[lo : hi + 1] + pb * prev_f[m - hi : m - lo + 1][::-1])
        f[level] = t[level].max(axis=0)
    return f.T.copy()
