"""The whole rental story from Python: register, rent, wait for RENTED, return, best-sellers.

Run it against `make run`, as a librarian (who may register, and rent for anyone):
    BOOKMESH_TOKEN=$(make -s token ROLE=librarian) PYTHONPATH=generated:. python example.py
"""

from __future__ import annotations

import uuid

from bookmesh.bestbook.v1 import bestbook_pb2
from bookmesh.book.v1 import book_pb2
from bookmesh.member.v1 import member_pb2
from bookmesh.rental.v1 import rental_pb2
from bookmesh_client import Mesh, call, wait_until


def item_state(mesh: Mesh, member_id: str, book_id: str) -> int | None:
    card = call(mesh.rentals.GetRentalCard, rental_pb2.GetRentalCardRequest(member_id=member_id)).rental_card
    for item in [*card.rented_items, *card.returned_items, *card.canceled_items]:
        if item.book_id == book_id:
            return item.state
    return None


def rental_story(mesh: Mesh) -> dict[str, object]:
    # Registration is not idempotent for books (a retry could register a second copy), so it is
    # called without retries; the member's unique email makes its retry safe.
    member = call(
        mesh.members.RegisterMember,
        member_pb2.RegisterMemberRequest(name="Python Reader", email=f"py.{uuid.uuid4().hex}@example.org"),
    ).member
    book = mesh.books.RegisterBook(
        book_pb2.RegisterBookRequest(
            title="The Left Hand of Darkness",
            author="Ursula K. Le Guin",
            isbn="978-0-441-47812-5",
            publisher="Ace",
            published_on="1969-03-01",
            classification="Fiction",
            location="Shelf 7",
        ),
        timeout=2.0,
    ).book
    print(f"registered member {member.member_id} and book {book.book_id}")

    card = call(mesh.rentals.RentBook, rental_pb2.RentBookRequest(member_id=member.member_id, book_id=book.book_id)).rental_card
    print(f"rented: {rental_pb2.ItemState.Name(card.rented_items[0].state)}")

    wait_until(lambda: True if item_state(mesh, member.member_id, book.book_id) == rental_pb2.ITEM_STATE_RENTED else None)
    print("the saga confirmed the rental: ITEM_STATE_RENTED")

    call(mesh.rentals.ReturnBook, rental_pb2.ReturnBookRequest(member_id=member.member_id, book_id=book.book_id))
    wait_until(lambda: True if item_state(mesh, member.member_id, book.book_id) == rental_pb2.ITEM_STATE_RETURNED else None)
    print("returned: ITEM_STATE_RETURNED")

    points = wait_until(
        lambda: p if (p := call(mesh.members.GetMember, member_pb2.GetMemberRequest(member_id=member.member_id)).member.points) >= 20 else None
    )
    print(f"the member has {points} points")

    def ranked() -> int | None:
        best = call(mesh.bestbooks.GetBestBooks, bestbook_pb2.GetBestBooksRequest(limit=100)).books
        return next((b.rentals for b in best if b.book_id == book.book_id), None)

    rentals = wait_until(ranked)
    print(f"best-sellers: {book.title!r} rented {rentals} time(s)")
    return {"member_id": member.member_id, "book_id": book.book_id, "points": points, "rentals": rentals}


if __name__ == "__main__":
    mesh = Mesh()
    try:
        rental_story(mesh)
    finally:
        mesh.close()
