"""The Python client against the running mesh (`make run`): the rental story, rich errors,
deadlines, and the feed consumer resuming from its cursor."""

from __future__ import annotations

import time
import uuid

import grpc
import pytest

import consumer
import example
from bookmesh.member.v1 import member_pb2
from bookmesh.rental.v1 import rental_pb2
from bookmesh_client import Mesh, call, field_violations


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


def test_unavailable_is_retried_then_reported():
    dead = Mesh({"book": "localhost:1", "member": "localhost:1", "rental": "localhost:1", "bestbook": "localhost:1"})
    try:
        with pytest.raises(grpc.RpcError) as raised:
            call(dead.members.GetMember, member_pb2.GetMemberRequest(member_id=str(uuid.uuid4())), attempts=3)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        dead.close()


def test_the_consumer_resumes_after_its_cursor(mesh, tmp_path, capsys):
    example.rental_story(mesh)  # makes sure there are events
    capsys.readouterr()  # forget the story's own output
    cursor = str(tmp_path / "rentals.cursor")
    assert consumer.follow(mesh, cursor, max_events=3) == 3
    first = capsys.readouterr().out.splitlines()
    assert consumer.follow(mesh, cursor, max_events=2) == 2
    second = capsys.readouterr().out.splitlines()
    sequences = [int(line.split()[0][1:]) for line in first + second]
    assert sequences == list(range(sequences[0], sequences[0] + 5)), "in order, nothing twice, nothing skipped"
    assert sequences[0] == 1
