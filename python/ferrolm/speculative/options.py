"""The options of one ``generate`` call, resolved the way Hugging Face ``model.generate`` does.

Every option comes from, in order: the keyword argument, the ``generation_config=`` argument, the
target's ``generation_config``, then the library-wide defaults of ``transformers`` (``max_length``
20, ``top_k`` 50, ...). So an instruct model whose ``generation_config.json`` samples, samples.

The target's scores at a tree node go through the same pipeline as in ``model.generate``, in the
same order: the sequence-dependent processors (repetition penalty, no-repeat n-grams), the
minimum-length EOS ban, the caller's ``logits_processor``, then (when sampling) the warpers
temperature, top-k, top-p, min-p. Processors that read ``input_ids`` see, at every node, the row's
committed tokens followed by the node's path from the root, which is exactly what
``model.generate`` would have passed at that step; so the output distribution stays the target's.
The draft proposes under the warpers only (any proposal keeps the output exact).

Options that change what is generated but cannot be honoured (beam search, several sequences per
prompt, the other warpers) raise ``ValueError`` naming the option.

Example:
    >>> from types import SimpleNamespace
    >>> model = SimpleNamespace(generation_config=None)
    >>> opts = resolve_options(model, None, 4, {"do_sample": True})
    >>> opts.do_sample, opts.warp, opts.max_new_tokens
    (True, Warp(temperature=1.0, top_k=50, top_p=None, min_p=None), 20)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from ferrolm.speculative.sampling import Warp

__all__ = ["IGNORED_INPUTS", "GenerationOptions", "resolve_options", "split_inputs"]

#: Tokenizer outputs ``generate`` accepts and ignores (``**tokenizer(..., return_tensors="pt")``).
IGNORED_INPUTS = ("token_type_ids", "special_tokens_mask", "offset_mapping", "length")

# Library-wide defaults of `model.generate` for the options read here.
_DEFAULTS: dict[str, Any] = {
    "max_length": 20,
    "min_length": 0,
    "do_sample": False,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
}

# Options honoured here.
_SUPPORTED = (
    "max_new_tokens",
    "max_length",
    "min_new_tokens",
    "min_length",
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "repetition_penalty",
    "no_repeat_ngram_size",
    "eos_token_id",
    "pad_token_id",
)

# Options that would change the output but are not implemented, with the values that mean "off".
_UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "num_beams": (None, 1),
    "num_beam_groups": (None, 1),
    "num_return_sequences": (None, 1),
    "penalty_alpha": (None,),
    "guidance_scale": (None, 1, 1.0),
    "sequence_bias": (None,),
    "bad_words_ids": (None,),
    "force_words_ids": (None,),
    "constraints": (None,),
    "typical_p": (None, 1, 1.0),
    "epsilon_cutoff": (None, 0, 0.0),
    "eta_cutoff": (None, 0, 0.0),
    "top_h": (None,),
    "encoder_repetition_penalty": (None, 1, 1.0),
    "encoder_no_repeat_ngram_size": (None, 0),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "exponential_decay_length_penalty": (None,),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "remove_invalid_values": (None, False),
    "renormalize_logits": (None, False),
    "watermarking_config": (None,),
    "stop_strings": (None,),
    "max_time": (None,),
    "prompt_lookup_num_tokens": (None,),
    "assistant_model": (None,),
    "prefix_allowed_tokens_fn": (None,),
    "return_dict_in_generate": (None, False),
    "output_scores": (None, False),
    "output_logits": (None, False),
    "output_attentions": (None, False),
    "output_hidden_states": (None, False),
    "use_mtp": (None, False),
}

# Options accepted and ignored: they change how, not what, `model.generate` computes.
_INERT = ("use_cache", "cache_implementation", "cache_config", "low_memory", "early_stopping")


def split_inputs(
    input_ids: Any, attention_mask: Any, kwargs: dict[str, Any]
) -> tuple[Any, Any, dict[str, Any]]:
    """Takes the prompt out of a ``BatchEncoding``/mapping or keyword arguments.

    Returns:
        ``(input_ids, attention_mask, options)``: the remaining keyword arguments are options.

    Raises:
        ValueError: no prompt, or a prompt given twice.
    """
    options = dict(kwargs)
    if "inputs" in options:
        if input_ids is not None:
            raise ValueError("`inputs` and `input_ids` were both given; pass one")
        input_ids = options.pop("inputs")
    if isinstance(input_ids, Mapping):
        encoding = dict(input_ids)
        if "input_ids" not in encoding:
            raise ValueError(
                f"a mapping of model inputs must hold `input_ids`, got keys {sorted(encoding)}"
            )
        input_ids = encoding.pop("input_ids")
        if "attention_mask" in encoding:
            if attention_mask is not None:
                raise ValueError("`attention_mask` was given twice (in the mapping and alone)")
            attention_mask = encoding.pop("attention_mask")
        for key in IGNORED_INPUTS:
            encoding.pop(key, None)
        if encoding:
            raise ValueError(f"cannot use model inputs {sorted(encoding)} (unknown to generate)")
    for key in IGNORED_INPUTS:
        options.pop(key, None)
    if input_ids is None:
        raise ValueError(
            "`input_ids` is required (a LongTensor, token-id lists or a BatchEncoding)"
        )
    return input_ids, attention_mask, options


@dataclass
class GenerationOptions:
    """One ``generate`` call's resolved options.

    Attributes:
        max_new_tokens: tokens each row may add.
        do_sample: sample (True) or take the processed argmax (False).
        warp: temperature/top-k/top-p/min-p when sampling, else None.
        eos: token ids that stop a row, in the configured order.
        pad: id filling finished rows.
        min_new_tokens, min_length: EOS is banned before these (0: no ban).
        prompt_width: the padded prompt length, which ``min_length`` counts like HF does.
        processors: the sequence-dependent processors in HF's order (the caller's included).
        stopping: the caller's stopping criteria, or None.
    """

    max_new_tokens: int
    do_sample: bool
    warp: Optional[Warp]
    eos: list[int]
    pad: int
    min_new_tokens: int
    min_length: int
    prompt_width: int
    processors: list[Any]
    stopping: Any

    @property
    def processes(self) -> bool:
        """Whether the target's raw logits need any processing before the warp."""
        return bool(self.processors) or (
            bool(self.eos) and (self.min_new_tokens > 0 or self.min_length > 0)
        )

    def target_scores(
        self,
        logits: torch.Tensor,
        rows: Sequence[tuple[list[int], int]],
        trees: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    ) -> torch.Tensor:
        """Processes the target's ``logits [B, W, V]`` at the nodes of every row's tree.

        Args:
            logits: raw logits after every node (node 0 of each row is its last committed token).
            rows: per row, its committed tokens (prompt without padding, then new tokens) and
                how many of them were generated.
            trees: per row, ``(parents, tokens, depth)`` of its tree (the first ``n`` of ``W``).

        Returns:
            the processed scores ``[B, W, V]`` (warpers not applied), or ``logits`` itself when
            nothing needs processing.
        """
        if not self.processes:
            return logits
        scores = logits.float().clone()
        ban_rows: list[int] = []
        ban_nodes: list[int] = []
        groups: dict[int, list[tuple[int, int, list[int]]]] = {}
        for b, ((tokens, generated), (parents, node_tokens, depth)) in enumerate(zip(rows, trees)):
            before = generated + np.asarray(depth, dtype=np.int64)
            banned = (before < self.min_new_tokens) | (before + self.prompt_width < self.min_length)
            for node in np.flatnonzero(banned if self.eos else np.zeros(0, bool)):
                ban_rows.append(b)
                ban_nodes.append(int(node))
            if self.processors:
                for i in range(len(parents)):
                    seq = tokens + _path(i, parents, node_tokens)
                    # Nodes whose sequences have one length go through the processors together.
                    groups.setdefault(len(seq), []).append((b, i, seq))
        if ban_rows:
            eos = torch.as_tensor(self.eos, dtype=torch.long, device=scores.device)
            rb = torch.as_tensor(ban_rows, device=scores.device)[:, None]
            rn = torch.as_tensor(ban_nodes, device=scores.device)[:, None]
            scores[rb, rn, eos[None, :]] = -math.inf
        for group in groups.values():
            ids = torch.tensor([g[2] for g in group], dtype=torch.long, device=scores.device)
            rb = torch.as_tensor([g[0] for g in group], device=scores.device)
            rn = torch.as_tensor([g[1] for g in group], device=scores.device)
            block = scores[rb, rn]
            for processor in self.processors:
                block = processor(ids, block)
            scores[rb, rn] = block.float()
        return scores

    def stops(self, tokens: list[int], scores: Optional[torch.Tensor]) -> bool:
        """Whether the caller's stopping criteria end a row whose tokens are now ``tokens``.

        Args:
            tokens: the row's prompt (without padding) and the tokens generated so far.
            scores: the processed scores ``[V]`` the last token was chosen from, or None.
        """
        if self.stopping is None:
            return False
        ids = torch.tensor([tokens], dtype=torch.long)
        batch_scores = None if scores is None else scores[None]
        criteria = [self.stopping] if callable(self.stopping) else list(self.stopping)
        for criterion in criteria:
            done = criterion(ids, batch_scores)
            if bool(torch.as_tensor(done).reshape(-1)[0]):
                return True
        return False


def _path(node: int, parents: np.ndarray, tokens: np.ndarray) -> list[int]:
    """Tokens from the root's first child down to ``node`` (empty for the root)."""
    out = []
    while node > 0:
        out.append(int(tokens[node]))
        node = int(parents[node])
    return out[::-1]


def _ids(value: Any, name: str) -> list[int]:
    if value is None:
        return []
    if isinstance(value, torch.Tensor):
        value = value.reshape(-1).tolist()
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return [int(value)]
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        out = []
        for v in value:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"`{name}` must hold ints, got {type(v).__name__}")
            out.append(int(v))
        return out
    raise TypeError(f"`{name}` must be an int or a list of ints, got {type(value).__name__}")


def _number(value: Any, name: str, low: float, high: float, *, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a number, got {type(value).__name__}")
    v = float(value)
    if not (low < v if low_open else low <= v) or not v <= high:
        left = "(" if low_open else "["
        raise ValueError(f"`{name}` must be in {left}{low}, {high}], got {value!r}")
    return v


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"`{name}` must be an int >= 0, got {value!r}")
    return int(value)


def resolve_options(
    target: Any,
    generation_config: Any,
    prompt_width: int,
    options: dict[str, Any],
    *,
    context: Optional[int] = None,
    logits_processor: Optional[Sequence[Any]] = None,
    stopping_criteria: Any = None,
) -> GenerationOptions:
    """Resolves a ``generate`` call's options like ``model.generate`` (see the module doc).

    Args:
        target: the target model (its ``generation_config`` supplies defaults).
        generation_config: the caller's ``GenerationConfig``, or None.
        prompt_width: the padded prompt length (``max_length`` and ``min_length`` count it).
        options: keyword options of the call; None means "not given".
        context: the target's context length, which caps the default length (None: no cap).
        logits_processor: the caller's processors, applied after the built-in ones.
        stopping_criteria: the caller's stopping criteria.

    Raises:
        ValueError: an unknown option, an option that cannot be honoured, or a bad value.
        TypeError: an option of the wrong type.
    """
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - set(_SUPPORTED) - set(_UNSUPPORTED) - set(_INERT))
    if unknown:
        raise ValueError(f"generate() got unknown option(s) {unknown}")
    sources = [given]
    for config in (generation_config, getattr(target, "generation_config", None)):
        if config is not None:
            sources.append(config.to_dict() if hasattr(config, "to_dict") else dict(config))
    sources.append(_DEFAULTS)

    def get(name: str) -> Any:
        for source in sources:
            value = source.get(name)
            if value is not None:
                return value
        return None

    for name, off in _UNSUPPORTED.items():
        value = get(name)
        if not any(value is o or (o is not None and value == o) for o in off):
            where = "given" if name in given else "set in the generation config"
            raise ValueError(
                f"`{name}`={value!r} ({where}) is not supported by speculative generation"
            )
    do_sample = get("do_sample")
    if not isinstance(do_sample, bool):
        raise TypeError(f"`do_sample` must be a bool, got {do_sample!r}")
    max_new = get("max_new_tokens")
    if max_new is None and any(s.get("max_length") is not None for s in sources[:-1]):
        max_new = max(0, _count(get("max_length"), "max_length") - prompt_width)
    elif max_new is None:
        # Nobody set a length: like transformers >= 5.1, 20 new tokens within the context.
        room = _DEFAULTS["max_length"] if context is None else context - prompt_width
        max_new = max(0, min(_DEFAULTS["max_length"], room))
    max_new = _count(max_new, "max_new_tokens")
    eos = _ids(get("eos_token_id"), "eos_token_id")
    pad_value = get("pad_token_id")
    pad = _ids(pad_value, "pad_token_id")[:1] or eos[:1] or [0]
    warp = None
    if do_sample:
        temperature = _number(get("temperature"), "temperature", 0.0, math.inf, low_open=True)
        top_k = int(_count(get("top_k"), "top_k"))
        top_p = _number(get("top_p"), "top_p", 0.0, 1.0)
        min_p_value = get("min_p")
        min_p = None if min_p_value is None else _number(min_p_value, "min_p", 0.0, 1.0)
        warp = Warp(temperature, top_k or None, top_p if top_p < 1.0 else None, min_p)
    processors: list[Any] = []
    penalty = _number(get("repetition_penalty"), "repetition_penalty", 0.0, math.inf, low_open=True)
    ngram = _count(get("no_repeat_ngram_size"), "no_repeat_ngram_size")
    if penalty != 1.0 or ngram > 0:
        from transformers import NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor

        if penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(penalty))
        if ngram > 0:
            processors.append(NoRepeatNGramLogitsProcessor(ngram))
    if logits_processor is not None:
        for p in logits_processor:
            if not callable(p):
                raise TypeError(f"`logits_processor` must hold callables, got {type(p).__name__}")
            processors.append(p)
    if (
        stopping_criteria is not None
        and not callable(stopping_criteria)
        and not isinstance(stopping_criteria, Sequence)
    ):
        raise TypeError(
            "`stopping_criteria` must be a StoppingCriteriaList or a list of criteria, "
            f"got {type(stopping_criteria).__name__}"
        )
    return GenerationOptions(
        max_new_tokens=max_new,
        do_sample=do_sample,
        warp=warp,
        eos=eos,
        pad=pad[0],
        min_new_tokens=_count(get("min_new_tokens") or 0, "min_new_tokens"),
        min_length=_count(get("min_length"), "min_length"),
        prompt_width=prompt_width,
        processors=processors,
        stopping=stopping_criteria,
    )
