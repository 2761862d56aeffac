"""Helpers for driving the inspector with Pilot from plain (sync) tests."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

import pytest
from textual.pilot import Pilot

from graphscope.model import Graph
from graphscope.tui.app import InspectorApp


@pytest.fixture
def drive() -> Callable[..., InspectorApp]:
    """Run ``steps(pilot)`` against an inspector on ``graph`` (or against an app, e.g. one on a
    run); return the app afterwards."""

    def run(graph: Graph | InspectorApp, steps: Callable[[Pilot], Awaitable[None]],
            size: tuple[int, int] = (120, 40)) -> InspectorApp:
        app = graph if isinstance(graph, InspectorApp) else InspectorApp(graph, source="test")

        async def main() -> None:
            async with app.run_test(size=size) as pilot:
                await pilot.pause()
                await steps(pilot)

        asyncio.run(main())
        return app

    return run
