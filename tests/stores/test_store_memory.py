"""The memory store keeps the store contract (tests/stores/store_contract.py), leases aside."""

from __future__ import annotations

import pytest
from store_contract import StoreContract, TraceContextContract

from webhooks_emitter.stores.memory import MemoryStore


@pytest.fixture
def store() -> MemoryStore:
    """A fresh memory store."""
    return MemoryStore()


class TestMemoryStore(StoreContract, TraceContextContract):
    """The contract every store keeps, on the memory store (which grants every lease)."""

    durable = False
