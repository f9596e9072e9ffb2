"""Speculative decoding: draft trees (SpecExec, Sequoia) and the generation loop over HF models."""

# --- spec-generate: the generation loop over Hugging Face models ---
from ferrolm.spec.generate import (
    DEFAULT_ACCEPTANCE as DEFAULT_ACCEPTANCE,
)
from ferrolm.spec.generate import (
    GenerationStats as GenerationStats,
)
from ferrolm.spec.generate import (
    SpeculativeGenerator as SpeculativeGenerator,
)
from ferrolm.spec.generate import (
    SpeculativeOutput as SpeculativeOutput,
)
from ferrolm.spec.generate import (
    sampling_probs as sampling_probs,
)
from ferrolm.spec.profile import (  # noqa: E402
    LatencyProfile as LatencyProfile,
    estimate_acceptance as estimate_acceptance,
    profile as profile,
)
