"""Shared fixtures. Integration tests get a real Kafka-protocol broker: the one named by
KAFKA_BOOTSTRAP when set (so the suite can run against real Kafka), otherwise an embedded
noida-db started for the session on a free port with a temporary data dir and stopped by PID.
Every test that touches Kafka uses its own topic prefix, so tests never see each other's data.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from schemas.settings import Settings, load_settings


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    external = os.environ.get("KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    from producers.broker import EmbeddedBroker

    broker = EmbeddedBroker().start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def topic_prefix() -> str:
    """A prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture
def make_settings(kafka_bootstrap: str, topic_prefix: str) -> Callable[..., Settings]:
    """Factory of settings pointing at the test broker with this test's topic prefix."""

    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"bootstrap_servers": kafka_bootstrap,
                                  "topic_prefix": topic_prefix,
                                  "profile": "production" if os.environ.get("KAFKA_BOOTSTRAP")
                                  else "test"}
        values.update(overrides)
        return load_settings(None, **values)

    return factory


@pytest.fixture
def kafka_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()
