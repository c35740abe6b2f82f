// The last member and book the desk worked with, so the next form (rent, return, the card)
// starts filled in. Per tab, like the session.

const MEMBER = "bookmesh.lastMemberId";
const BOOK = "bookmesh.lastBookId";

export const recent = {
  get memberId(): string {
    return sessionStorage.getItem(MEMBER) ?? "";
  },
  set memberId(id: string) {
    sessionStorage.setItem(MEMBER, id);
  },
  get bookId(): string {
    return sessionStorage.getItem(BOOK) ?? "";
  },
  set bookId(id: string) {
    sessionStorage.setItem(BOOK, id);
  },
};
