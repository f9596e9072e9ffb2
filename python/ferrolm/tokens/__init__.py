"""Under-trained ("glitch") token detection, after "Fishing for Magikarp" (Land & Bartolo 2024).

Example:
    >>> from ferrolm import tokens
    >>> r = tokens.scan("path/to/tokenizer.json")  # doctest: +SKIP
    >>> r.counts()  # doctest: +SKIP
    >>> ind = tokens.indicators("path/to/model", scan=r)  # doctest: +SKIP
    >>> ind.candidates[:20]  # doctest: +SKIP
"""

from ferrolm.tokens.indicators import Indicators, find_reference, indicators
from ferrolm.tokens.scan import (
    CATEGORY_NAMES,
    SUMMARY_DEFINITIONS,
    Scanner,
    ScanResult,
    scan,
    tokenizer_json,
)
from ferrolm.tokens.verify import DEFAULT_TEMPLATES, Verification, load_model, verify
from ferrolm.tokens.weights import EmbeddingMatrices, read_embeddings

__all__ = [
    "CATEGORY_NAMES",
    "DEFAULT_TEMPLATES",
    "SUMMARY_DEFINITIONS",
    "EmbeddingMatrices",
    "Indicators",
    "ScanResult",
    "Scanner",
    "Verification",
    "find_reference",
    "indicators",
    "load_model",
    "read_embeddings",
    "scan",
    "tokenizer_json",
    "verify",
]
