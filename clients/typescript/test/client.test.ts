// The TypeScript client against the running mesh (`make run`): the rental story, rich errors,
// deadlines and retries.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { test } from "node:test";

import { Code, ConnectError } from "@connectrpc/connect";

import { rentalStory } from "../src/example.js";
import { execFileSync } from "node:child_process";

import { connectMesh, fieldViolations, refusalReason, withRetry } from "../src/index.js";

const mesh = connectMesh();

test("the rental story", async () => {
  const outcome = await rentalStory(mesh);
  assert.ok(outcome.points >= 20n, "10 for the rental, 10 for the return");
  assert.equal(outcome.rentals, 1n);
});

test("invalid input lists every field", async () => {
  const error = await mesh.members.registerMember({ name: "", email: "nope" }, { timeoutMs: 2000 }).catch((e) => e);
  assert.ok(error instanceof ConnectError);
  assert.equal(error.code, Code.InvalidArgument);
  assert.deepEqual(Object.keys(fieldViolations(error)).sort(), ["email", "name"]);
});

test("a business error is not retried", async () => {
  const started = Date.now();
  const error = await withRetry((o) => mesh.members.getMember({ memberId: randomUUID() }, o)).catch((e) => e);
  assert.equal(error.code, Code.NotFound);
  assert.deepEqual(fieldViolations(error), {});
  assert.ok(Date.now() - started < 2000);
});

test("a member reads their own card and no one else's", async () => {
  const outcome = await rentalStory(mesh);
  const tool = process.env.BOOKMESH_TOKEN_TOOL ?? "bookmesh-token";
  const token = execFileSync(tool, ["--role", "member", "--subject", outcome.memberId]).toString().trim();
  const member = connectMesh(undefined, { ca: process.env.BOOKMESH_CA, token });
  const own = await withRetry((o) => member.rentals.getRentalCard({ memberId: outcome.memberId }, o));
  assert.equal(own.rentalCard?.memberId, outcome.memberId);
  const error = await member.rentals.getRentalCard({ memberId: randomUUID() }, { timeoutMs: 2000 }).catch((e) => e);
  assert.equal(error.code, Code.PermissionDenied);
  assert.equal(refusalReason(error), "NOT_SELF");
});

test("without a token, calls are unauthenticated", async () => {
  const anonymous = connectMesh(undefined, { ca: process.env.BOOKMESH_CA });
  const error = await anonymous.members.listMembers({}, { timeoutMs: 2000 }).catch((e) => e);
  assert.equal(error.code, Code.Unauthenticated);
  assert.equal(refusalReason(error), "CREDENTIALS_MISSING");
});

test("UNAVAILABLE is retried, then reported", async () => {
  const dead = connectMesh({ book: "localhost:1", member: "localhost:1", rental: "localhost:1", bestbook: "localhost:1" });
  let attempts = 0;
  const error = await withRetry((o) => {
    attempts++;
    return dead.members.getMember({ memberId: randomUUID() }, o);
  }).catch((e) => e);
  assert.equal(error.code, Code.Unavailable);
  assert.equal(attempts, 3);
});

test("a deadline too short fails fast", async () => {
  const error = await mesh.rentals.getRentalCard({ memberId: randomUUID() }, { timeoutMs: 1 }).catch((e) => e);
  assert.ok(error instanceof ConnectError);
  // The client's timer says DEADLINE_EXCEEDED; if the server's fires first, tonic answers
  // CANCELLED "Timeout expired" (upstream behaviour).
  assert.ok([Code.DeadlineExceeded, Code.Canceled].includes(error.code), `got ${Code[error.code]}`);
});
