"""Pytest configuration for tests/ and benches/: `gpu` tests skip without a usable CUDA GPU."""

from __future__ import annotations

import signal

import pytest

import ferrolm.cuda

# Every test fails when ferrolm itself makes a call a library deprecates (issue #15).
pytest_plugins = ["ferrolm.testing.deprecations"]


def pytest_configure(config: pytest.Config) -> None:
    # The Ctrl-C tests send SIGINT to processes they start. A script that runs pytest in the
    # background without job control (`cmd &`) starts it with SIGINT ignored, and an ignored
    # signal stays ignored in every process started from there: restore Python's handler, which
    # a child process gets back as the default disposition.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if ferrolm.cuda.is_available():
        return
    reason = "needs a CUDA GPU: " + (
        "no NVIDIA driver found" if not ferrolm.cuda.driver_available() else "no usable GPU"
    )
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
