// The library desk: register members and books, rent and return. Each form is one RPC; the
// ids a registration returns fill the rent and return forms, so the usual story (a member, a
// book, a rental) takes four clicks.

import { books, CALL_TIMEOUT_MS, members, rentals } from "../api";
import { h } from "../dom";
import { Form } from "../form";
import { ItemState, type RentalCard } from "../gen/bookmesh/rental/v1/rental_pb";
import { recent } from "../recent";
import type { Cleanup } from "../router";

export function renderDesk(root: HTMLElement): Cleanup {
  const options = { timeoutMs: CALL_TIMEOUT_MS };

  const rent = new Form(
    {
      id: "rent",
      title: "Rent a book",
      description: "Puts the book on the member's card as PENDING; the rental saga makes it RENTED.",
      fields: [
        { name: "member_id", label: "Member id", value: recent.memberId, placeholder: "UUID" },
        { name: "book_id", label: "Book id", value: recent.bookId, placeholder: "UUID" },
      ],
      submit: "Rent",
    },
    async (values, form) => {
      const { rentalCard } = await rentals.rentBook(
        { memberId: values.member_id, bookId: values.book_id },
        options,
      );
      remember(values.member_id, values.book_id);
      form.setStatus(
        "ok",
        `Rented: the book is ${itemState(rentalCard, values.book_id)} on the card. `,
        cardLink(values.member_id),
      );
    },
  );

  const giveBack = new Form(
    {
      id: "return",
      title: "Return a book",
      description: "Takes a RENTED book off the card (a late fee if overdue); the saga puts it back on the shelf.",
      fields: [
        { name: "member_id", label: "Member id", value: recent.memberId, placeholder: "UUID" },
        { name: "book_id", label: "Book id", value: recent.bookId, placeholder: "UUID" },
      ],
      submit: "Return",
    },
    async (values, form) => {
      await rentals.returnBook({ memberId: values.member_id, bookId: values.book_id }, options);
      remember(values.member_id, values.book_id);
      form.setStatus("ok", "Returned: the saga confirms it shortly. ", cardLink(values.member_id));
    },
  );

  // A new id goes to the rent and return forms at once: the next step is usually to rent.
  function remember(memberId?: string, bookId?: string) {
    if (memberId) {
      recent.memberId = memberId;
      rent.set("member_id", memberId);
      giveBack.set("member_id", memberId);
    }
    if (bookId) {
      recent.bookId = bookId;
      rent.set("book_id", bookId);
      giveBack.set("book_id", bookId);
    }
  }

  const member = new Form(
    {
      id: "member",
      title: "Register a member",
      fields: [
        { name: "name", label: "Name", placeholder: "e.g. Ada Lovelace", hint: "1 to 100 characters" },
        { name: "email", label: "Email", placeholder: "e.g. ada@example.org", type: "email", hint: "unique across members" },
      ],
      submit: "Register member",
    },
    async (values, form) => {
      const { member: created } = await members.registerMember(
        { name: values.name, email: values.email },
        options,
      );
      if (!created) throw new Error("the answer carries no member");
      remember(created.memberId);
      form.setStatus(
        "ok",
        `Registered ${created.name}: member id `,
        h("code", { "data-testid": "new-member-id" }, created.memberId),
        " (now in the rent form).",
      );
    },
  );

  const book = new Form(
    {
      id: "book",
      title: "Register a book",
      description: "Adds one copy to the catalogue; it starts AVAILABLE.",
      fields: [
        { name: "title", label: "Title", placeholder: "e.g. Dune" },
        { name: "author", label: "Author", placeholder: "e.g. Frank Herbert" },
        { name: "isbn", label: "ISBN", placeholder: "e.g. 978-0-441-01359-3", hint: "ISBN-10 or ISBN-13, checksum verified" },
        { name: "publisher", label: "Publisher", placeholder: "e.g. Ace" },
        { name: "published_on", label: "Published on", placeholder: "e.g. 1965-08-01", hint: "YYYY-MM-DD" },
        { name: "classification", label: "Classification", placeholder: "e.g. Fiction" },
        { name: "location", label: "Location", placeholder: "e.g. Shelf 1" },
      ],
      submit: "Register book",
    },
    async (values, form) => {
      const { book: created } = await books.registerBook(
        {
          title: values.title,
          author: values.author,
          isbn: values.isbn,
          publisher: values.publisher,
          publishedOn: values.published_on,
          classification: values.classification,
          location: values.location,
        },
        options,
      );
      if (!created) throw new Error("the answer carries no book");
      remember(undefined, created.bookId);
      form.setStatus(
        "ok",
        `Registered “${created.title}”: book id `,
        h("code", { "data-testid": "new-book-id" }, created.bookId),
        " (now in the rent form).",
      );
    },
  );

  root.append(
    h("h1", {}, "Library desk"),
    h(
      "div",
      { class: "grid" },
      h("div", { class: "column" }, member.element, rent.element, giveBack.element),
      h("div", { class: "column" }, book.element),
    ),
  );
  return () => {};
}

function itemState(card: RentalCard | undefined, bookId: string): string {
  const item = card?.rentedItems.find((candidate) => candidate.bookId === bookId);
  return item ? (ItemState[item.state] ?? "UNKNOWN") : "on the card";
}

function cardLink(memberId: string): HTMLElement {
  return h(
    "a",
    { href: `#/card/${encodeURIComponent(memberId)}`, "data-testid": "card-link" },
    "Open the member's card →",
  );
}
