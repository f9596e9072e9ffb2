"""The ragged KV cache of one model, the attention blocks run on it, and the 4D-mask probe.

Only public cache API is used (iterate the cache, ``crop``, ``batch_select_indices``), so it
works with ``DynamicCache`` in transformers 4.42+ and 5.x.

Example:
    >>> attend_prefix(torch.tensor([[True, False]]), 1).tolist()
    [[[True, False, False]]]
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from ferrolm.speculative.hf import forward_kwarg, logits_kwarg, vocab_size
from ferrolm.speculative.stats import GenerationStats

__all__ = ["RaggedKVCache", "attend_prefix", "chain_block", "probe_tree_mask"]


class RaggedKVCache:
    """A model plus its ``DynamicCache`` and the per-row validity of every cache slot.

    Rows share one sequence axis; ``valid[b, s]`` says whether slot ``s`` holds a committed token
    of row ``b`` (slots a row does not use are holes, masked out of its attention).

    Args:
        model: a Hugging Face causal LM.
        batch: number of rows.
        stats: counters; :meth:`forward` adds its wall time to ``stats.forward_time_s``.
    """

    def __init__(self, model: Any, batch: int, stats: GenerationStats) -> None:
        from transformers import DynamicCache

        self.model = model
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.cache = DynamicCache()
        self.valid = torch.zeros(batch, 0, dtype=torch.bool)
        self.cache_kw = forward_kwarg(model)
        self.logits_kw = logits_kwarg(model)
        self.stats = stats

    @property
    def length(self) -> int:
        """Slots on the sequence axis (holes included)."""
        return int(self.valid.shape[1])

    def forward(
        self,
        ids: np.ndarray,
        positions: np.ndarray,
        attend: torch.Tensor,
        keep_last: int,
        host: bool = True,
    ) -> torch.Tensor:
        """Runs ``ids [B, m]`` at ``positions [B, m]`` appended after the cache.

        Args:
            ids: int64 token ids ``[B, m]``.
            positions: int64 position ids ``[B, m]``.
            attend: bool ``[B, m, L + m]``: which cache slots and block positions each query sees.
            keep_last: how many of the last block positions to return logits for.
            host: return the logits on the CPU (else on the model's device).

        Returns:
            float32 logits ``[B, keep_last, V]``. The new slots start invalid.
        """
        b, m = ids.shape
        mask = torch.zeros(attend.shape, dtype=self.dtype)
        mask.masked_fill_(~attend, torch.finfo(self.dtype).min)
        kwargs: dict[str, Any] = {
            "input_ids": torch.from_numpy(ids).to(self.device),
            "position_ids": torch.from_numpy(positions).to(self.device),
            "attention_mask": mask[:, None].to(self.device),
            self.cache_kw: self.cache,
            "use_cache": True,
        }
        if self.logits_kw is not None:
            kwargs[self.logits_kw] = keep_last
        start = time.perf_counter()
        logits: torch.Tensor = self.model(**kwargs).logits[:, -keep_last:]
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.stats.forward_time_s += time.perf_counter() - start
        self.valid = torch.cat([self.valid, torch.zeros(b, m, dtype=torch.bool)], dim=1)
        return logits.float().cpu() if host else logits.float()

    def compact(self, start: int, keep: list[np.ndarray]) -> None:
        """Moves slots ``keep[b]`` (absolute, increasing, >= start) of row ``b`` to ``start``,
        ``start + 1``, ...; crops the cache to ``start + max(len(keep[b]))``; the moved slots
        become valid."""
        width = max((len(k) for k in keep), default=0)
        end = self.length
        new_valid = torch.zeros(len(keep), start + width, dtype=torch.bool)
        new_valid[:, :start] = self.valid[:, :start]
        for b, k in enumerate(keep):
            new_valid[b, start : start + len(k)] = True
        in_place = all(
            len(k) == 0 or (int(k[0]) == start and int(k[-1]) == start + len(k) - 1) for k in keep
        )
        if in_place:
            # Every row keeps a prefix of the new slots (always so without speculation): no copy.
            pass
        elif len(keep) == 1:
            index = torch.as_tensor(keep[0], dtype=torch.long, device=self.device)
            for layer in self.cache:
                for tensor in (layer[0], layer[1]):
                    tensor[:, :, start : start + width] = tensor.index_select(2, index)
        elif width > 0:
            rel = np.zeros((len(keep), width), dtype=np.int64)
            for b, k in enumerate(keep):
                if len(k):
                    rel[b, : len(k)] = k - start
                    rel[b, len(k) :] = k[-1] - start
            rel_t = torch.from_numpy(rel).to(self.device)
            for layer in self.cache:
                for tensor in (layer[0], layer[1]):
                    bsz, heads, _, dim = tensor.shape
                    index = rel_t[:, None, :, None].expand(bsz, heads, width, dim)
                    moved = torch.gather(tensor[:, :, start:end], 2, index)
                    tensor[:, :, start : start + width] = moved
        removed = end - (start + width)
        if removed > 0:
            self.cache.crop(-removed)
        self.valid = new_valid

    def defragment(self) -> None:
        """Squeezes the holes out of every row (a full gather) once they fill half the cache."""
        length = self.length
        if length < 64 or len(self.valid) < 2:
            return
        counts = self.valid.sum(1)
        if int(counts.max()) * 2 > length:
            return
        keep = [np.flatnonzero(row.numpy()).astype(np.int64) for row in self.valid]
        self.compact(0, keep)

    def select_rows(self, rows: list[int]) -> None:
        """Keeps only the given rows (in that order) of the cache and of ``valid``."""
        index = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        self.cache.batch_select_indices(index)
        self.valid = self.valid[torch.as_tensor(rows, dtype=torch.long)]


def attend_prefix(valid: torch.Tensor, m: int) -> torch.Tensor:
    """``bool [B, m, L + m]`` where every query of a new block sees its row's valid slots only."""
    b, length = valid.shape
    attend = torch.zeros(b, m, length + m, dtype=torch.bool)
    attend[:, :, :length] = valid[:, None, :]
    return attend


def chain_block(
    chains: list[list[int]], start_positions: list[int], pad: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Left-padded chain block: ids, positions [B, P], causal block mask [B, P, P], P."""
    width = max(len(c) for c in chains)
    ids = np.full((len(chains), width), pad, dtype=np.int64)
    pos = np.zeros((len(chains), width), dtype=np.int64)
    block = np.zeros((len(chains), width, width), dtype=bool)
    block[:, np.arange(width), np.arange(width)] = True
    for b, chain in enumerate(chains):
        s = width - len(chain)
        ids[b, s:] = chain
        pos[b, s:] = start_positions[b] + np.arange(len(chain))
        block[b, s:, s:] = np.tril(np.ones((len(chain), len(chain)), dtype=bool))
    return ids, pos, block, width


@torch.inference_mode()
def probe_tree_mask(model: Any, role: str) -> None:
    """Checks that ``model`` honours a custom 4D mask and explicit position ids.

    Runs token c after [a, b] the ordinary way, then again as a tree block [b, x, c] where c
    must not see the sibling x; the two logits must agree. Errors the model raises on the way
    (an architecture that cannot run this way) become a ``ValueError`` naming the fix.

    Raises:
        ValueError: the model ignores the mask or position ids, or cannot run with them.
    """
    try:
        _probe(model, role)
    except (KeyError, IndexError, TypeError, AttributeError, RuntimeError) as e:
        import transformers

        raise ValueError(
            f"`{role}` ({type(model).__name__}) cannot run with a DynamicCache, a "
            f"custom 4D mask and explicit position ids under transformers "
            f"{transformers.__version__} ({type(e).__name__}: {e}); upgrade "
            "transformers (checked: 5.24 for Llama, Qwen2, Mistral and GPT-2; 4.46 "
            "for Llama, Qwen2 and Mistral) and use attn_implementation='sdpa' or "
            "'eager'"
        ) from e


def _probe(model: Any, role: str) -> None:
    vocab = vocab_size(model)
    a, b, x, c = (1 % vocab, 2 % vocab, 3 % vocab, 4 % vocab)
    weight = next(model.parameters())
    device, dtype = weight.device, weight.dtype
    ref = model(input_ids=torch.tensor([[a, b, c]], device=device)).logits[0, -1].float()
    kv = RaggedKVCache(model, 1, GenerationStats())
    kv.forward(np.array([[a]]), np.array([[0]]), attend_prefix(kv.valid, 1) | True, keep_last=1)
    kv.valid[:] = True
    attend = attend_prefix(kv.valid, 3)
    attend[0, :, 1:] = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 1]], dtype=torch.bool)
    got = kv.forward(np.array([[b, x, c]]), np.array([[1, 2, 2]]), attend, keep_last=1)[0, -1]
    err = float((got - ref.cpu()).abs().max())
    scale = float(ref.abs().max()) + 1e-6
    # The two ways differ in summation order: a few units in the last place of the model's
    # dtype (bfloat16 keeps 8 bits; torch 2.6's CPU SDPA rounds differently from 2.15), while
    # a mask that is ignored moves the logits by a large fraction of their scale.
    rel = max(1e-3, 4 * torch.finfo(dtype).eps) if dtype.is_floating_point else 1e-3
    if not err <= rel * scale + 1e-3:
        impl = getattr(model.config, "_attn_implementation", None)
        raise ValueError(
            f"`{role}` ({type(model).__name__}, attn_implementation={impl!r}) ignores custom 4D "
            f"attention masks or position ids (tree logits differ by {err:.3g}); load it with "
            "attn_implementation='sdpa' (or 'eager')"
        )
