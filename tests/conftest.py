"""Shared fixtures: small synthetic datasets and their graph windows, built once per session."""

from __future__ import annotations

import pytest

from anomaly_pipeline.graph import GraphWindows, WindowConfig, build_graph_windows
from anomaly_pipeline.sources.synthetic import SyntheticConfig, generate_events

SMALL = SyntheticConfig(seed=3, n_users=30, n_servers=8, days=5, events_per_user_day=40.0)


@pytest.fixture(scope="session")
def small_events():
    return generate_events(SMALL)


@pytest.fixture(scope="session")
def small_windows(small_events) -> GraphWindows:
    return build_graph_windows(small_events, WindowConfig(history=4))
