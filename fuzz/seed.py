#!/usr/bin/env python3
"""Writes the fuzz seeds (fuzz/seeds/<target>, committed; the runs grow fuzz/corpus): the requests the tests send (bookmesh::testing::a_book, the
members and ids of the API suites), encoded as protobuf by hand, each behind the target's
selector byte. Run from the repository root: python3 fuzz/seed.py"""
import pathlib
import uuid


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def text(field, value):
    data = value.encode()
    return varint(field << 3 | 2) + varint(len(data)) + data


def number(field, value):
    return varint(field << 3) + varint(value & 0xFFFFFFFFFFFFFFFF)


ID = str(uuid.UUID("0190f5c2-7a4e-7cc1-b8e3-2f1d5b0c9a11"))
BOOK = b"".join(
    text(i + 1, v)
    for i, v in enumerate(
        ["Dune", "Frank Herbert", "9780441013593", "Ace", "1965-08-01", "Fiction", "Shelf 1"]
    )
)
seeds = {
    "book_requests": {
        "register": b"\x00" + BOOK,
        "register-bad-date": b"\x00" + BOOK.replace(b"1965-08-01", b"-5000-01-1"),
        "get": b"\x01" + text(1, ID),
        "get-upper": b"\x01" + text(1, ID.upper()),
        "list": b"\x02" + number(1, 20) + text(2, "cGFnZTowMTkw"),
    },
    "member_requests": {
        "register": b"\x00" + text(1, "Ada Lovelace") + text(2, "ada@example.org"),
        "register-bad": b"\x00" + text(1, "") + text(2, "nope"),
        "get": b"\x01" + text(1, ID),
        "list": b"\x02" + number(1, -1),
    },
    "rental_rules": {
        # RentBook, then: rent, confirm, mark overdue, return, confirm, clear 10, confirm payment.
        "saga": bytes([len(text(1, ID) + text(2, ID))]) + text(1, ID) + text(2, ID)
        + bytes([0, 1, 0, 1, 0, 0, 6, 1, 0, 3, 1, 0, 4, 0, 0, 7, 0, 26, 8, 0, 26]),
        "compensations": bytes([0])
        + bytes([0, 2, 0, 2, 0, 0, 0, 2, 0, 1, 0, 0, 3, 2, 0, 5, 0, 0, 10, 0, 30, 11, 0, 0]),
    },
}
for target, files in seeds.items():
    folder = pathlib.Path("fuzz/seeds") / target
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
