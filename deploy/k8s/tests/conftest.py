"""Fixtures: two `origami serve` replicas for the session, and a spare one per test."""

import pytest

from replicas import Replica


@pytest.fixture(scope="session")
def replicas():
    rs = []
    try:
        for _ in range(2):
            rs.append(Replica())
        yield rs
    finally:
        for r in rs:
            r.stop()


@pytest.fixture
def spare_replica():
    r = Replica()
    yield r
    r.stop()
