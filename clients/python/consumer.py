"""A live feed of rentals, in Python: subscribes to the rental service's event feed over gRPC
(bookmesh.events.v1.EventFeedService), keeps its cursor in its own file, and resumes after it
when restarted — the same contract the Rust consumers follow, in another language.

    BOOKMESH_CLIENT_CERT=data/pki/python-consumer.crt BOOKMESH_CLIENT_KEY=data/pki/python-consumer.key \
      PYTHONPATH=generated:. python consumer.py --cursor rentals.cursor

An event feed carries every event of its producer, so only workloads the authorization policy
names may subscribe: this one proves it is `python-consumer` with its certificate.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import grpc
from google.protobuf import text_format

from bookmesh.events.v1 import events_pb2
from bookmesh.rental.v1 import events_pb2 as rental_events
from bookmesh_client import Mesh

PAYLOADS = {
    "bookmesh.rental.v1.ItemRented": rental_events.ItemRented,
    "bookmesh.rental.v1.RentConfirmed": rental_events.RentConfirmed,
    "bookmesh.rental.v1.RentCanceled": rental_events.RentCanceled,
    "bookmesh.rental.v1.ItemReturned": rental_events.ItemReturned,
    "bookmesh.rental.v1.ReturnCanceled": rental_events.ReturnCanceled,
    "bookmesh.rental.v1.OverdueCleared": rental_events.OverdueCleared,
}


def load_cursor(path: str) -> int:
    try:
        with open(path, encoding="utf-8") as file:
            return int(json.load(file)["after_sequence"])
    except FileNotFoundError:
        return 0


def save_cursor(path: str, sequence: int) -> None:
    # Write then rename: a crash leaves the old cursor or the new one, never half a file.
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as file:
        json.dump({"after_sequence": sequence}, file)
    os.replace(temporary, path)


def one_line(value: object) -> str:
    """A field value on one line (nested messages, such as timestamps, included)."""
    if hasattr(value, "DESCRIPTOR"):
        return "{" + text_format.MessageToString(value, as_one_line=True) + "}"
    return str(value)


def describe(event: events_pb2.Event) -> str:
    payload_type = PAYLOADS.get(event.event_type)
    detail = ""
    if payload_type is not None:
        payload = payload_type()
        event.payload.Unpack(payload)
        detail = " ".join(f"{field.name}={one_line(value)}" for field, value in payload.ListFields())
    return f"#{event.sequence} {event.event_type.rsplit('.', 1)[-1]} {detail}".strip()


def follow(mesh: Mesh, cursor_path: str, max_events: int | None) -> int:
    """Prints events after the cursor as they come; returns how many it printed."""
    printed = 0
    while True:
        after = load_cursor(cursor_path)
        try:
            # No deadline: a subscription is a long-lived stream (live tail).
            for response in mesh.rental_events.Subscribe(events_pb2.SubscribeRequest(after_sequence=after)):
                print(describe(response.event), flush=True)
                save_cursor(cursor_path, response.event.sequence)
                printed += 1
                if max_events is not None and printed >= max_events:
                    return printed
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            print(f"feed unavailable ({error.details()}); resubscribing", file=sys.stderr)
            time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cursor", default="rentals.cursor", help="file keeping the last sequence seen")
    parser.add_argument("--max-events", type=int, default=None, help="stop after this many events")
    args = parser.parse_args()
    mesh = Mesh()
    try:
        follow(mesh, args.cursor, args.max_events)
    finally:
        mesh.close()


if __name__ == "__main__":
    main()
