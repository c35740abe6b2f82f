"""The real mesh under clients/with-mesh.sh: the Rust services on their default ports, mTLS
with the local PKI, a librarian's token and the token tool in the environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import grpc

from bookmesh.book.v1 import book_pb2, book_pb2_grpc
from bookmesh.member.v1 import member_pb2, member_pb2_grpc
from bookmesh.rental.v1 import rental_pb2, rental_pb2_grpc

from .pki import issue

ADDRESSES = {"book": "localhost:50051", "member": "localhost:50052", "rental": "localhost:50053"}


def available() -> bool:
    return bool(os.environ.get("BOOKMESH_TOKEN_TOOL")) and bool(os.environ.get("BOOKMESH_PKI_DIR"))


def pki_dir() -> Path:
    return Path(os.environ["BOOKMESH_PKI_DIR"])


def notification_pki(scratch: Path) -> Path:
    """The mesh's PKI if the launcher issued `notification` a certificate; otherwise a copy of
    it with one issued by the same authority (as the launcher would)."""
    pki = pki_dir()
    if (pki / "notification.crt").exists():
        return pki
    copy = scratch / "pki"
    copy.mkdir()
    for name in ("ca.crt", "ca.key", "jwt.pub", "jwt.key", "check.crt", "check.key", "loadgen.crt", "loadgen.key"):
        if (pki / name).exists():
            shutil.copy(pki / name, copy / name)
    issue(copy, "notification")
    return copy


def token(role: str, subject: str | None = None) -> str:
    command = [os.environ["BOOKMESH_TOKEN_TOOL"], "--role", role]
    if subject:
        command += ["--subject", subject]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


class Mesh:
    """Stubs of the Rust services, as a librarian."""

    def __init__(self) -> None:
        credentials = grpc.ssl_channel_credentials((pki_dir() / "ca.crt").read_bytes())
        self._channels = {name: grpc.secure_channel(address, credentials) for name, address in ADDRESSES.items()}
        self.books = book_pb2_grpc.BookServiceStub(self._channels["book"])
        self.members = member_pb2_grpc.MemberServiceStub(self._channels["member"])
        self.rentals = rental_pb2_grpc.RentalServiceStub(self._channels["rental"])
        self.metadata = (("authorization", f"Bearer {os.environ['BOOKMESH_TOKEN']}"),)

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()

    def member(self) -> str:
        request = member_pb2.RegisterMemberRequest(name="Ada Lovelace", email=f"ada.{uuid.uuid4().hex}@example.org")
        return self.members.RegisterMember(request, metadata=self.metadata, timeout=5).member.member_id

    def book(self, title: str = "Dune") -> str:
        request = book_pb2.RegisterBookRequest(
            title=title,
            author="Frank Herbert",
            isbn="978-0-441-01359-3",
            publisher="Ace",
            published_on="1965-08-01",
            classification="Fiction",
            location="Shelf 1",
        )
        return self.books.RegisterBook(request, metadata=self.metadata, timeout=5).book.book_id

    def rent(self, member_id: str, book_id: str, traceparent: str | None = None) -> None:
        metadata = self.metadata + ((("traceparent", traceparent),) if traceparent else ())
        self.rentals.RentBook(
            rental_pb2.RentBookRequest(member_id=member_id, book_id=book_id), metadata=metadata, timeout=5
        )

    def history(self, member_id: str) -> rental_pb2.GetRentalHistoryResponse:
        return self.rentals.GetRentalHistory(
            rental_pb2.GetRentalHistoryRequest(member_id=member_id), metadata=self.metadata, timeout=5
        )

    def confirmed_step(self, member_id: str, book_id: str):
        """The RentConfirmed step of the member's rental of `book_id`, once it happened."""
        for saga in self.history(member_id).sagas:
            if saga.book_id != book_id:
                continue
            for step in saga.steps:
                if step.event_type == "bookmesh.rental.v1.RentConfirmed":
                    return step
        return None
