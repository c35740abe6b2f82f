// A member's card: GetRentalCard (status, books held, late fee) and, live from
// WatchRentalHistory, every rental's saga as a timeline. Each history message means something
// changed, so the card is read again then too.

import { Code, ConnectError } from "@connectrpc/connect";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";

import { CALL_TIMEOUT_MS, explainError, members, rentals } from "../api";
import { formatTime, h, replace, sleep, type Child } from "../dom";
import type { Member } from "../gen/bookmesh/member/v1/member_pb";
import {
  ItemState,
  RentalStatus,
  type RentalCard,
  type RentalItem,
  type RentalSaga,
  type SagaStep,
} from "../gen/bookmesh/rental/v1/rental_pb";
import { recent } from "../recent";
import type { Cleanup } from "../router";
import { currentSession } from "../session";

/** Re-subscribing after an end or an error waits this long, doubling up to the maximum. */
const FIRST_RETRY_MS = 1_000;
const MAX_RETRY_MS = 10_000;

/**
 * Errors that another try will not fix: a malformed id, a role that may not look, no or a bad
 * token, a gateway without the RPC. The watch stops and says so; the user acts (a new id or a
 * sign-in re-renders the page) or presses Retry.
 */
const FINAL_CODES = new Set([
  Code.InvalidArgument,
  Code.PermissionDenied,
  Code.Unauthenticated,
  Code.Unimplemented,
]);

export function renderCard(root: HTMLElement, argument: string | undefined): Cleanup {
  const session = currentSession();
  const ownId = session?.roles.includes("member") ? session.subject : "";
  const input = h("input", {
    id: "card-member-id",
    name: "member_id",
    placeholder: "member UUID",
    autocomplete: "off",
    "data-testid": "card-member-id",
  });
  input.value = argument ?? (ownId || recent.memberId);
  const picker = h(
    "form",
    { class: "inline-form", "data-testid": "card-picker" },
    h("label", { for: "card-member-id" }, "Member id"),
    input,
    h("button", { type: "submit", "data-testid": "card-show" }, "Show card"),
  );
  picker.addEventListener("submit", (event) => {
    event.preventDefault();
    const id = input.value.trim();
    if (id) location.hash = `#/card/${encodeURIComponent(id)}`;
  });

  root.append(h("h1", {}, "Member's card"), picker);
  if (!argument) {
    root.append(h("p", { class: "muted" }, "Enter a member id to see their card and rental sagas."));
    return () => {};
  }
  const memberId = argument;

  const cardBox = h("section", { class: "card", "data-testid": "rental-card" }, h("p", { class: "muted" }, "Loading the card…"));
  const watchStatus = h("span", { class: "watch-status", "data-testid": "watch-status" });
  const sagaList = h("div", { class: "sagas", "data-testid": "sagas" }, h("p", { class: "muted" }, "Waiting for the history…"));
  root.append(
    h(
      "div",
      { class: "grid" },
      h("div", { class: "column" }, cardBox),
      h(
        "div",
        { class: "column wide" },
        h("section", { class: "card" }, h("div", { class: "section-head" }, h("h2", {}, "Rental sagas"), watchStatus), sagaList),
      ),
    ),
  );

  // Leaving the page (or another member's card) aborts the stream and any call in flight.
  const leave = new AbortController();
  const { signal } = leave;

  // --- The card: read now, and again after each history message. Reads never overlap: a
  // change during a read asks for one more read after it, so the last answer shown is fresh.
  let reading = false;
  let readAgain = false;
  async function refreshCard(): Promise<void> {
    if (reading) {
      readAgain = true;
      return;
    }
    reading = true;
    try {
      do {
        readAgain = false;
        await readCard();
      } while (readAgain && !signal.aborted);
    } finally {
      reading = false;
    }
  }

  async function readCard(): Promise<void> {
    const options = { signal, timeoutMs: CALL_TIMEOUT_MS };
    const [card, member] = await Promise.allSettled([
      rentals.getRentalCard({ memberId, pageSize: 10 }, options),
      members.getMember({ memberId }, options),
    ]);
    if (signal.aborted) return;
    const memberInfo = member.status === "fulfilled" ? member.value.member : undefined;
    if (card.status === "fulfilled" || member.status === "fulfilled") {
      // A member the services know: the desk's forms may start from it.
      recent.memberId = memberId;
    }
    if (card.status === "fulfilled") {
      replace(cardBox, ...cardView(card.value.rentalCard, memberInfo));
    } else if (card.reason instanceof ConnectError && card.reason.code === Code.NotFound) {
      replace(
        cardBox,
        h("h2", {}, "Rental card"),
        memberLine(memberInfo),
        h("p", { class: "muted", "data-testid": "no-card" }, "No rental card yet: this member never rented."),
      );
    } else {
      replace(
        cardBox,
        h("h2", {}, "Rental card"),
        h("div", { class: "status error", "data-testid": "card-error" }, `Could not read the card: ${explainError(card.reason)}`),
      );
    }
  }

  // --- The history: one stream at a time; after it ends (the server closes it after ten
  // minutes) or fails, subscribe again after a pause that grows while failures repeat.
  function setWatch(state: string, ...text: Child[]) {
    watchStatus.setAttribute("data-state", state);
    watchStatus.className = `watch-status ${state}`;
    replace(watchStatus, ...text);
  }

  async function watch(): Promise<void> {
    let retryMs = FIRST_RETRY_MS;
    while (!signal.aborted) {
      setWatch("connecting", "connecting…");
      let why: string;
      try {
        for await (const message of rentals.watchRentalHistory({ memberId }, { signal })) {
          retryMs = FIRST_RETRY_MS; // the stream works: a later failure starts over at 1 s
          setWatch("live", "● live");
          replace(sagaList, ...sagasView(message.sagas));
          void refreshCard();
        }
        why = "stream ended";
      } catch (error) {
        if (signal.aborted) return;
        if (error instanceof ConnectError && FINAL_CODES.has(error.code)) {
          setWatch(
            "stopped",
            `not watching: ${explainError(error)} `,
            h("button", { type: "button", class: "link", onclick: () => void watch() }, "Retry"),
          );
          return;
        }
        why = explainError(error);
      }
      if (signal.aborted) return;
      setWatch("retrying", `${why}; reconnecting in ${retryMs / 1000} s`);
      await sleep(retryMs, signal);
      retryMs = Math.min(retryMs * 2, MAX_RETRY_MS);
    }
  }

  void refreshCard();
  void watch();
  return () => leave.abort();
}

function memberLine(member: Member | undefined): Child {
  if (!member) return null;
  return h(
    "p",
    { "data-testid": "card-member" },
    h("strong", {}, member.name),
    ` · ${member.email} · `,
    h("span", { "data-testid": "card-points" }, `${member.points} points`),
  );
}

function cardView(card: RentalCard | undefined, member: Member | undefined): Child[] {
  if (!card) return [h("p", { class: "muted" }, "The answer carries no card.")];
  const status = RentalStatus[card.status] ?? "UNKNOWN";
  return [
    h(
      "div",
      { class: "section-head" },
      h("h2", {}, "Rental card"),
      h("span", { class: `badge status-${status.toLowerCase()}`, "data-testid": "card-status", "data-status": status }, status),
    ),
    memberLine(member),
    h(
      "p",
      {},
      "Late fee: ",
      h("strong", { "data-testid": "card-late-fee" }, `${card.lateFee} points`),
      card.lateFeeInPayment > 0n
        ? ` (${card.lateFeeInPayment} points being paid since ${formatTime(date(card.lateFeeInPaymentSince))})`
        : null,
    ),
    h("h3", {}, `Books held (${card.rentedItems.length} of 5)`),
    card.rentedItems.length === 0
      ? h("p", { class: "muted" }, "None.")
      : itemTable(card.rentedItems, ["Title", "State", "Rented", "Due"], (item) => [
          titleCell(item),
          stateBadge(item.state),
          formatTime(date(item.rentedAt)),
          h("span", { class: item.overdue ? "overdue" : "" }, formatTime(date(item.dueAt)), item.overdue ? " (overdue)" : ""),
        ]),
    card.returnedItems.length > 0 ? h("h3", {}, "Returned (latest)") : null,
    card.returnedItems.length > 0
      ? itemTable(card.returnedItems, ["Title", "Returned", "Late fee"], (item) => [
          titleCell(item),
          formatTime(date(item.returnedAt)),
          `${item.lateFee}`,
        ])
      : null,
    card.canceledItems.length > 0 ? h("h3", {}, "Canceled (latest)") : null,
    card.canceledItems.length > 0
      ? itemTable(card.canceledItems, ["Title", "Reason"], (item) => [titleCell(item), item.cancelReason])
      : null,
  ];
}

function itemTable(items: RentalItem[], headings: string[], cells: (item: RentalItem) => Child[]): HTMLElement {
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, ...headings.map((heading) => h("th", {}, heading)))),
    h(
      "tbody",
      {},
      ...items.map((item) =>
        h("tr", { "data-testid": `card-item-${item.bookId}` }, ...cells(item).map((cell) => h("td", {}, cell))),
      ),
    ),
  );
}

function titleCell(item: RentalItem): HTMLElement {
  return h("span", {}, item.title || "(untitled)", h("br"), h("code", { class: "id" }, item.bookId));
}

function stateBadge(state: ItemState): HTMLElement {
  const name = ItemState[state] ?? "UNKNOWN";
  return h("span", { class: `badge state-${name.toLowerCase()}` }, name);
}

function sagasView(sagas: RentalSaga[]): Child[] {
  if (sagas.length === 0) {
    return [h("p", { class: "muted", "data-testid": "no-sagas" }, "No rentals yet.")];
  }
  // The server sends the oldest first; the newest is what a desk looks at.
  return [...sagas].reverse().map((saga) => {
    const state = ItemState[saga.state] ?? "UNKNOWN";
    return h(
      "article",
      {
        class: "saga",
        "data-testid": `saga-${saga.bookId}`,
        "data-state": state,
        "data-item-id": saga.itemId,
      },
      h(
        "header",
        {},
        h("strong", {}, saga.title || "(untitled)"),
        " ",
        stateBadge(saga.state),
        h("code", { class: "id" }, saga.bookId),
      ),
      saga.cancelReason ? h("p", { class: "cancel-reason" }, `Canceled: ${saga.cancelReason}`) : null,
      h("ol", { class: "timeline" }, ...saga.steps.map(stepView)),
    );
  });
}

function stepView(step: SagaStep): HTMLElement {
  // "bookmesh.book.v1.BookReserved" → "BookReserved": the package says who, the producer
  // column says it too.
  const short = step.eventType.split(".").pop() ?? step.eventType;
  return h(
    "li",
    { "data-testid": "saga-step", "data-event": short, title: `${step.eventType} · ${step.eventId}` },
    h("span", { class: "event" }, short),
    h("span", { class: "producer" }, step.producer),
    h("time", {}, formatTime(date(step.at))),
    step.detail ? h("span", { class: "detail" }, step.detail) : null,
  );
}

function date(timestamp: Timestamp | undefined): Date | undefined {
  return timestamp ? timestampDate(timestamp) : undefined;
}
