"""Test, benchmark and demo scaffolding for ferrolm (as ``numpy.testing`` is for NumPy).

- ``ferrolm.testing.speculative``: plain NumPy/torch references of the speculative-decoding core.
- ``ferrolm.testing.models``: loaders for the small real models that PyPI packages ship.
- ``ferrolm.testing.prune``: the DivPrune paper's routine in torch, tiny random LLaVA models.
- ``ferrolm.testing.comm``: the int8 quantizers in torch ops, the timed ring all-reduce.
- ``ferrolm.testing.launch``: run a function on N local processes in one process group.
- ``ferrolm.testing.timing``: best-of-N wall-clock timing.
- ``ferrolm.testing.tokenizations``: llama.cpp's reference tokenizations (inputs, expected ids).

The capability packages (``ferrolm.speculative``, ``ferrolm.prune``, ``ferrolm.comm``,
``ferrolm.tokens``) never import from here; tests, benches and the demo do.
"""
