"""Isolation for the reliability tests: a test that fails mid-backward must not leave armed
graphscope hooks behind to be blamed on the next test."""

from __future__ import annotations

import pytest

import graphscope
from graphscope.autograd import hooks


@pytest.fixture(autouse=True)
def _no_leftover_hooks():
    yield
    if graphscope.active_hook_count():
        # Clean up for the next test; the test itself asserts the hook count it expects.
        for recorder in list(hooks._live):
            recorder.remove()
