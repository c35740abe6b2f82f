"""The Python client against the running mesh (`make run`): the rental story, rich errors,
deadlines, and the feed consumer resuming from its cursor."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import grpc
import pytest

import example
from bookmesh.member.v1 import member_pb2
from bookmesh.rental.v1 import rental_pb2
from bookmesh_client import Mesh, call, field_violations, refusal_reason


@pytest.fixture()
def mesh():
    mesh = Mesh()
    yield mesh
    mesh.close()


def test_the_rental_story(mesh):
    outcome = example.rental_story(mesh)
    assert outcome["points"] >= 20, "10 for the rental, 10 for the return"
    assert outcome["rentals"] == 1


def test_invalid_input_lists_every_field(mesh):
    with pytest.raises(grpc.RpcError) as raised:
        mesh.members.RegisterMember(member_pb2.RegisterMemberRequest(name="", email="nope"), timeout=2)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(raised.value)) == {"name", "email"}


def test_a_business_error_is_not_retried(mesh):
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as raised:
        call(mesh.members.GetMember, member_pb2.GetMemberRequest(member_id=str(uuid.uuid4())))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert field_violations(raised.value) == {}
    assert time.monotonic() - started < 2


def test_a_deadline_too_short_is_deadline_exceeded(mesh):
    with pytest.raises(grpc.RpcError) as raised:
        mesh.rentals.GetRentalCard(rental_pb2.GetRentalCardRequest(member_id=str(uuid.uuid4())), timeout=0.000001)
    # The client's own timer says DEADLINE_EXCEEDED; if the server's fires first, tonic answers
    # CANCELLED "Timeout expired" (upstream behaviour, which the Rust client normalises).
    assert raised.value.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)


def member_token(member_id: str) -> str:
    """A development token of the member themself, from `make -s token` (the tool behind it)."""
    return subprocess.run(
        [os.environ["BOOKMESH_TOKEN_TOOL"], "--role", "member", "--subject", member_id],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_a_member_reads_their_own_card_and_no_one_elses(mesh):
    outcome = example.rental_story(mesh)
    member = Mesh(token=member_token(outcome["member_id"]))
    try:
        own = call(member.rentals.GetRentalCard, rental_pb2.GetRentalCardRequest(member_id=outcome["member_id"]))
        assert own.rental_card.member_id == outcome["member_id"]
        with pytest.raises(grpc.RpcError) as raised:
            member.rentals.GetRentalCard(rental_pb2.GetRentalCardRequest(member_id=str(uuid.uuid4())), timeout=2)
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert refusal_reason(raised.value) == "NOT_SELF"
    finally:
        member.close()


def test_without_a_token_calls_are_unauthenticated():
    anonymous = Mesh(token="")
    try:
        with pytest.raises(grpc.RpcError) as raised:
            anonymous.members.ListMembers(member_pb2.ListMembersRequest(), timeout=2)
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert refusal_reason(raised.value) == "CREDENTIALS_MISSING"
    finally:
        anonymous.close()


def test_unavailable_is_retried_then_reported():
    dead = Mesh({"book": "localhost:1", "member": "localhost:1", "rental": "localhost:1", "bestbook": "localhost:1"})
    try:
        with pytest.raises(grpc.RpcError) as raised:
            call(dead.members.GetMember, member_pb2.GetMemberRequest(member_id=str(uuid.uuid4())), attempts=3)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        dead.close()


def run_consumer(cursor: str, events: int) -> list[int]:
    """Runs consumer.py as its own process (a real restart each time); returns the sequences."""
    script = os.path.join(os.path.dirname(__file__), "..", "consumer.py")
    # The feed is for the services that consume it: the consumer is a workload with its own
    # certificate, and carries no user token.
    pki = os.environ["BOOKMESH_PKI_DIR"]
    env = {
        **os.environ,
        "BOOKMESH_CLIENT_CERT": os.path.join(pki, "python-consumer.crt"),
        "BOOKMESH_CLIENT_KEY": os.path.join(pki, "python-consumer.key"),
        "BOOKMESH_TOKEN": "",
    }
    finished = subprocess.run(
        [sys.executable, script, "--cursor", cursor, "--max-events", str(events)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=env,
    )
    return [int(line.split()[0][1:]) for line in finished.stdout.splitlines()]


def test_the_consumer_resumes_after_its_cursor(mesh, tmp_path):
    example.rental_story(mesh)  # makes sure there are events on the rental feed
    cursor = str(tmp_path / "rentals.cursor")
    first = run_consumer(cursor, 3)
    second = run_consumer(cursor, 2)  # a new process, resuming from the cursor file
    sequences = first + second
    assert sequences == list(range(1, 6)), "in order, nothing twice, nothing skipped"
