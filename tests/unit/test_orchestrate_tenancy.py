"""Who a job belongs to: its visibility, per-tenant idempotency names, rate buckets per API key."""

from __future__ import annotations

import pytest

from llmkit.core.auth import ANONYMOUS, BOOTSTRAP_ADMIN, Identity
from llmkit.core.queue.memory import MemoryPriorityQueue
from llmkit.orchestrate.backends.echo import EchoBackend
from llmkit.orchestrate.jobs import Job, MemoryJobStore
from llmkit.orchestrate.service import Orchestrator, Submission, idempotency_name
from llmkit.settings import OrchestrateSettings

A = Identity("ka", "tenant-a", frozenset({"chat"}))
B = Identity("kb", "tenant-b", frozenset({"chat"}))
ROOT = Identity("kr", "default", frozenset({"chat", "admin"}), platform_admin=True)


def test_a_job_is_visible_to_its_tenant_and_platform_admins_only() -> None:
    job = Job("j", "p", tenant_id="tenant-a", key_id="ka")
    assert job.visible_to(A) and job.visible_to(BOOTSTRAP_ADMIN) and job.visible_to(ROOT)
    assert not job.visible_to(B) and not job.visible_to(ANONYMOUS)
    assert Job("old", "p").visible_to(ANONYMOUS), "jobs stored before tenants are the default tenant's"
    assert job.public()["tenant_id"] == "tenant-a" and "key_id" not in job.public()


def test_idempotency_names_never_collide_across_tenants() -> None:
    one = idempotency_name(Identity("k", "a:b"), "c")
    two = idempotency_name(Identity("k", "a"), "b:c")
    assert one != two
    assert idempotency_name(A, "x") != idempotency_name(B, "x")
    assert idempotency_name(A, "x") == idempotency_name(Identity("other", "tenant-a"), "x")


@pytest.mark.parametrize(
    ("by", "session", "key_id", "expected"),
    [
        ("both", "s", None, ["client:c", "session:s"]),
        ("both", "s", "k1", ["client:c", "key:k1"]),
        ("session", "s", "k1", ["key:k1"]),
        ("session", None, "k1", ["key:k1"]),
        ("session", None, None, ["client:c"]),
        ("client", "s", "k1", ["client:c"]),
    ],
)
def test_a_presented_key_is_counted_instead_of_the_session(
    by: str, session: str | None, key_id: str | None, expected: list[str]
) -> None:
    settings = OrchestrateSettings(rate_limit_by=by)
    orchestrator = Orchestrator(settings, MemoryJobStore(60), MemoryPriorityQueue("t", 10), EchoBackend())
    assert [key for key, _ in orchestrator.rate_keys(session, "c", key_id)] == expected


def test_the_cache_key_holds_the_tenant() -> None:
    orchestrator = Orchestrator(
        OrchestrateSettings(), MemoryJobStore(60), MemoryPriorityQueue("t", 10), EchoBackend()
    )
    sub = Submission(prompt="same")
    assert orchestrator.cache_key(sub, "tenant-a") != orchestrator.cache_key(sub, "tenant-b")
    assert orchestrator.cache_key(sub) == orchestrator.cache_key(sub, "default")
