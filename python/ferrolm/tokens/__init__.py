"""Under-trained ("glitch") token detection, after "Fishing for Magikarp" (Land & Bartolo 2024).

Example:
    A toy BPE vocabulary whose token ``"ba"`` no text encodes to (no merge makes it):

    >>> from tokenizers import Tokenizer, models
    >>> from ferrolm import tokens
    >>> bpe = models.BPE(vocab={"a": 0, "b": 1, "ab": 2, "ba": 3}, merges=[("a", "b")])
    >>> r = tokens.scan(Tokenizer(bpe))
    >>> r.counts()["unreachable_multi"], r.decoded[3]
    (1, 'ba')

    On a real model: scan the tokenizer, rank tokens by weight indicators, then ask the model
    to repeat the best candidates::

        r = tokens.scan("path/to/model")
        ind = tokens.indicators("path/to/model", scan=r)
        model, tokenizer = tokens.load_model("path/to/model")
        v = tokens.verify(model, tokenizer, ind.candidates[:20])
"""

from ferrolm.tokens.convert import ENCODING_NAMES, encode, encode_batch
from ferrolm.tokens.indicators import (
    Indicators,
    PreparedWeights,
    find_reference,
    indicators,
    prepare_weights,
)
from ferrolm.tokens.scan import (
    CATEGORY_NAMES,
    SUMMARY_DEFINITIONS,
    Scanner,
    ScanResult,
    scan,
    tokenizer_json,
)
from ferrolm.tokens.verify import DEFAULT_TEMPLATES, Verification, load_model, verify
from ferrolm.tokens.weights import EmbeddingMatrices, NoWeightsError, read_embeddings

__all__ = [
    "CATEGORY_NAMES",
    "DEFAULT_TEMPLATES",
    "ENCODING_NAMES",
    "SUMMARY_DEFINITIONS",
    "EmbeddingMatrices",
    "Indicators",
    "NoWeightsError",
    "PreparedWeights",
    "ScanResult",
    "Scanner",
    "Verification",
    "encode",
    "encode_batch",
    "find_reference",
    "indicators",
    "load_model",
    "prepare_weights",
    "read_embeddings",
    "scan",
    "tokenizer_json",
    "verify",
]
