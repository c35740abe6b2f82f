// The whole rental story from TypeScript: register, rent, wait for RENTED, return, best-sellers.
// Against `make run`: npm run build && node dist/src/example.js

import { randomUUID } from "node:crypto";

import { ItemState } from "./gen/bookmesh/rental/v1/rental_pb.js";
import { connectMesh, type Mesh, waitUntil, withRetry } from "./index.js";

async function itemState(mesh: Mesh, memberId: string, bookId: string): Promise<ItemState | undefined> {
  const { rentalCard } = await withRetry((o) => mesh.rentals.getRentalCard({ memberId }, o));
  const items = [...(rentalCard?.rentedItems ?? []), ...(rentalCard?.returnedItems ?? []), ...(rentalCard?.canceledItems ?? [])];
  return items.find((item) => item.bookId === bookId)?.state;
}

export async function rentalStory(mesh: Mesh) {
  // A retried registration with one email cannot create two members (ALREADY_EXISTS); a retried
  // RegisterBook could register a second copy, so it is not retried.
  const { member } = await withRetry((o) =>
    mesh.members.registerMember({ name: "TypeScript Reader", email: `ts.${randomUUID()}@example.org` }, o),
  );
  const { book } = await mesh.books.registerBook(
    {
      title: "Kindred",
      author: "Octavia E. Butler",
      isbn: "978-0-8070-8305-5",
      publisher: "Doubleday",
      publishedOn: "1979-06-01",
      classification: "Fiction",
      location: "Shelf 9",
    },
    { timeoutMs: 2000 },
  );
  if (!member || !book) throw new Error("registration answered without the entity");
  console.log(`registered member ${member.memberId} and book ${book.bookId}`);

  const { rentalCard } = await withRetry((o) => mesh.rentals.rentBook({ memberId: member.memberId, bookId: book.bookId }, o));
  console.log(`rented: ${ItemState[rentalCard?.rentedItems[0]?.state ?? 0]}`);

  await waitUntil(async () => ((await itemState(mesh, member.memberId, book.bookId)) === ItemState.RENTED ? true : undefined));
  console.log("the saga confirmed the rental: RENTED");

  await withRetry((o) => mesh.rentals.returnBook({ memberId: member.memberId, bookId: book.bookId }, o));
  await waitUntil(async () => ((await itemState(mesh, member.memberId, book.bookId)) === ItemState.RETURNED ? true : undefined));
  console.log("returned: RETURNED");

  const points = await waitUntil(async () => {
    const found = (await withRetry((o) => mesh.members.getMember({ memberId: member.memberId }, o))).member;
    return found && found.points >= 20n ? found.points : undefined;
  });
  console.log(`the member has ${points} points`);

  const rentals = await waitUntil(async () => {
    const { books } = await withRetry((o) => mesh.bestBooks.getBestBooks({ limit: 100 }, o));
    return books.find((stats) => stats.bookId === book.bookId)?.rentals;
  });
  console.log(`best-sellers: ${JSON.stringify(book.title)} rented ${rentals} time(s)`);
  return { memberId: member.memberId, bookId: book.bookId, points, rentals };
}

if (process.argv[1]?.endsWith("example.js")) {
  await rentalStory(connectMesh());
}
