"""Test, benchmark and demo scaffolding for ferrolm (as ``numpy.testing`` is for NumPy).

Plain NumPy/torch references of the core algorithms, loaders for the small real models that
PyPI packages ship, and local multi-process launchers. The capability packages
(``ferrolm.speculative``, ``ferrolm.prune``, ``ferrolm.comm``, ``ferrolm.tokens``) never
import from here; tests, benches and the demo do.
"""
