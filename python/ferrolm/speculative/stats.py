"""What a speculative generation call returns: the output and its counters.

Example:
    >>> stats = GenerationStats(new_tokens=12, row_target_calls=4)
    >>> stats.tau
    3.0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from ferrolm.speculative.sequoia import acceptance_vector

__all__ = ["GenerationStats", "SpeculativeOutput"]


@dataclass
class GenerationStats:
    """What one :meth:`SpeculativeGenerator.generate` call did.

    Attributes:
        new_tokens: tokens generated over all rows.
        row_target_calls: target forwards summed over rows (a batched forward counts once per row
            still generating); ``tau`` divides by it.
        target_forwards: batched target forward calls.
        draft_forwards: batched draft forward calls.
        draft_time_s: wall time of the draft phase (tree growth, draft forwards included).
        verify_time_s: wall time of the verify phase (target forward, acceptance, cache compaction).
        forward_time_s: wall time inside the two models' forward calls only.
        total_time_s: wall time of the whole call.
        accepted_ranks: for every verified node on an accepted path that had children, the rank of
            the accepted child (0 = best) or -1 when none was accepted.
        tokens_per_call: new tokens committed per row per target forward.
    """

    new_tokens: int = 0
    row_target_calls: int = 0
    target_forwards: int = 0
    draft_forwards: int = 0
    draft_time_s: float = 0.0
    verify_time_s: float = 0.0
    forward_time_s: float = 0.0
    total_time_s: float = 0.0
    accepted_ranks: list[int] = field(default_factory=list)
    tokens_per_call: list[int] = field(default_factory=list)

    @property
    def tau(self) -> float:
        """Generated tokens per target forward per row, bonus token included."""
        return self.new_tokens / self.row_target_calls if self.row_target_calls else 0.0

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens per second of wall time (all rows)."""
        return self.new_tokens / self.total_time_s if self.total_time_s > 0 else 0.0

    @property
    def overhead_fraction(self) -> float:
        """Share of the wall time spent outside the two models' forward calls."""
        if self.total_time_s <= 0:
            return 0.0
        return max(0.0, self.total_time_s - self.forward_time_s) / self.total_time_s

    def record_ranks(self, parents: Any, rank: Any, path: Any) -> None:
        """Adds to ``accepted_ranks`` the outcome at every node of an accepted ``path`` that had
        children: the rank of the accepted child, or -1 where the bonus token left the tree."""
        parents = np.asarray(parents)
        has_children = np.zeros(len(parents), dtype=bool)
        has_children[parents[1:]] = True
        rank = np.asarray(rank)
        for i, node in enumerate(path):
            if not has_children[node]:
                break
            self.accepted_ranks.append(int(rank[path[i + 1]]) if i + 1 < len(path) else -1)

    def acceptance_vector(self, width: int = 8) -> npt.NDArray[np.float64]:
        """P(the k-th ranked child is accepted), k = 1..width, via :func:`acceptance_vector`."""
        ranks = np.asarray(self.accepted_ranks, dtype=np.int64)
        if len(ranks) == 0:
            return np.zeros(width)
        ranks = np.where(ranks < width, ranks, -1)  # accepted beyond `width`: not among the first
        return np.asarray(acceptance_vector(ranks, width), dtype=np.float64)

    def merge(self, other: GenerationStats) -> None:
        """Adds another call's counters to this one (for aggregates over prompts)."""
        for name in (
            "new_tokens",
            "row_target_calls",
            "target_forwards",
            "draft_forwards",
            "draft_time_s",
            "verify_time_s",
            "forward_time_s",
            "total_time_s",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.accepted_ranks.extend(other.accepted_ranks)
        self.tokens_per_call.extend(other.tokens_per_call)

    def summary(self) -> str:
        """One line: tau, tokens/s and the time split."""
        return (
            f"tau {self.tau:.2f} | {self.tokens_per_s:.2f} tok/s | draft {self.draft_time_s:.2f} s"
            f" | verify {self.verify_time_s:.2f} s | outside forwards "
            f"{100 * self.overhead_fraction:.1f}%"
        )


@dataclass
class SpeculativeOutput:
    """Result of :meth:`SpeculativeGenerator.generate`.

    Attributes:
        sequences: int64 ``[B, T + max_generated]``: the input ids as given (left-padded when the
            input was a list) followed by the new tokens, rows right-padded with ``pad_token_id``
            (the layout of ``target.generate``).
        new_tokens: the new tokens of each row (EOS included when it stopped the row).
        stats: counters and timings.
    """

    sequences: torch.Tensor
    new_tokens: list[list[int]]
    stats: GenerationStats
