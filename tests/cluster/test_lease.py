"""Leader election's edge cases against an in-memory Lease store with the API server's rules
(409 on a create that exists, 409 on a PUT with a stale resourceVersion) and a fake clock.
The real API server is exercised by tests/e2e/test_detection.py."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from webhook.cluster.api import ApiError
from webhook.cluster.lease import LeaderElection
from webhook.logs import JsonLog

PATH = "/apis/coordination.k8s.io/v1/namespaces/ns/leases"


class Leases:
    """One namespace's Leases, as the API server keeps them."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.down = False
        self.before_replace: list[Any] = []
        """Callables run before the next PUT is applied (another writer sneaking in)."""

    def _check(self) -> None:
        if self.down:
            raise ApiError("connection refused")

    def get(self, path: str, timeout: float, query: Any = None) -> Any:
        self._check()
        name = path.rsplit("/", 1)[1]
        if name not in self.objects:
            raise ApiError("not found", 404, "NotFound")
        return copy.deepcopy(self.objects[name])

    def create(self, path: str, body: Any, timeout: float = 5) -> Any:
        self._check()
        name = body["metadata"]["name"]
        if name in self.objects:
            raise ApiError("exists", 409, "AlreadyExists")
        return self._store(name, body)

    def replace(self, path: str, body: Any, timeout: float = 5) -> Any:
        self._check()
        while self.before_replace:
            self.before_replace.pop(0)()
        name = path.rsplit("/", 1)[1]
        current = self.objects[name]
        if body["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"]:
            raise ApiError("conflict", 409, "Conflict")
        return self._store(name, body)

    def _store(self, name: str, body: Any) -> Any:
        self.version += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.objects[name] = stored
        return copy.deepcopy(stored)

    def holder(self) -> str | None:
        holder: str | None = self.objects["detector"]["spec"]["holderIdentity"]
        return holder


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def elector(leases: Leases, clock: Clock, identity: str, **kwargs: Any) -> LeaderElection:
    return LeaderElection(
        leases,
        "ns",
        "detector",
        identity,
        JsonLog("error"),
        duration=15,
        renew_deadline=10,
        retry=2,
        clock=clock,
        wall=lambda: datetime(2026, 1, 1, tzinfo=UTC),
        **kwargs,
    )


@pytest.fixture
def leases() -> Leases:
    return Leases()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_first_creates_the_lease_and_leads_the_second_waits(leases: Leases, clock: Clock) -> None:
    a, b = elector(leases, clock, "a"), elector(leases, clock, "b")
    assert a.try_once() and not b.try_once()
    spec = leases.objects["detector"]["spec"]
    assert spec["holderIdentity"] == "a" and spec["leaseTransitions"] == 0
    assert spec["renewTime"] == "2026-01-01T00:00:00.000000Z"
    clock.now += 14
    assert a.try_once(), "the holder renews"
    assert not b.try_once(), "renewed: still held"


def test_a_lease_not_renewed_for_its_duration_is_taken_over(leases: Leases, clock: Clock) -> None:
    a, b = elector(leases, clock, "a"), elector(leases, clock, "b")
    assert a.try_once()
    assert not b.try_once()  # b observes the record now
    clock.now += 14.9
    assert not b.try_once(), "not yet expired as b saw it"
    clock.now += 0.2
    assert b.try_once()
    assert leases.holder() == "b"
    assert leases.objects["detector"]["spec"]["leaseTransitions"] == 1
    assert not a.try_once() and not a.leading, "the old holder sees another holder: steps down"


def test_expiry_is_timed_from_when_this_replica_saw_the_record_change(
    leases: Leases, clock: Clock
) -> None:
    """A renewTime far in the past (another node's clock) does not make the Lease expired:
    only a record that stays the same for the duration does."""
    a, b = elector(leases, clock, "a"), elector(leases, clock, "b")
    a.wall = lambda: datetime(2000, 1, 1, tzinfo=UTC)
    assert a.try_once()
    assert not b.try_once(), "a renewTime from the year 2000 is still a fresh record"


def test_two_replicas_racing_for_an_expired_lease_cannot_both_win(
    leases: Leases, clock: Clock
) -> None:
    a, b, c = (elector(leases, clock, name) for name in "abc")
    assert a.try_once()
    assert not b.try_once() and not c.try_once()
    clock.now += 16  # a died: expired for b and c
    leases.before_replace.append(lambda: c.try_once())  # c writes between b's GET and PUT
    assert not b.try_once(), "b's PUT carries a stale resourceVersion: 409"
    assert c.leading and leases.holder() == "c"


def test_a_holder_that_cannot_renew_steps_down_before_the_lease_expires(
    leases: Leases, clock: Clock
) -> None:
    changes: list[bool] = []
    a = elector(leases, clock, "a", on_change=changes.append)
    assert a.try_once()
    leases.down = True
    clock.now += 9
    assert a.try_once(), "within the renew deadline it still leads"
    clock.now += 1.5
    assert not a.try_once(), "10 s without a renewal: steps down (the Lease lasts 15 s)"
    assert changes == [True, False]
    leases.down = False
    assert a.try_once(), "still the holder on record: renews and leads again"


def test_release_hands_over_at_once(leases: Leases, clock: Clock) -> None:
    a, b = elector(leases, clock, "a"), elector(leases, clock, "b")
    assert a.try_once() and not b.try_once()
    a.release()
    assert not a.leading and leases.holder() is None
    assert b.try_once(), "no holder: taken without waiting for the duration"


def test_release_leaves_a_lease_someone_else_holds(leases: Leases, clock: Clock) -> None:
    a, b = elector(leases, clock, "a"), elector(leases, clock, "b")
    assert a.try_once() and not b.try_once()
    clock.now += 16  # a did not renew
    assert b.try_once()
    a.release()
    assert leases.holder() == "b"


def test_timings_must_leave_room_to_step_down(leases: Leases, clock: Clock) -> None:
    with pytest.raises(ValueError, match="retry < renew_deadline < duration"):
        LeaderElection(leases, "ns", "x", "a", JsonLog("error"), duration=10, renew_deadline=10)
