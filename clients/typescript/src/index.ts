// A small, idiomatic layer over the generated bookmesh code: TLS checked against the mesh's
// certificate authority with a bearer token (and, for a workload, its own certificate), every
// call with a deadline, UNAVAILABLE (a replica starting, draining or gone) retried with jittered
// backoff, and the rich error details (google.rpc.BadRequest, google.rpc.ErrorInfo) read.

import { readFileSync } from "node:fs";

import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";

import { BestBookService } from "./gen/bookmesh/bestbook/v1/bestbook_pb.js";
import { BookService } from "./gen/bookmesh/book/v1/book_pb.js";
import { MemberService } from "./gen/bookmesh/member/v1/member_pb.js";
import { RentalService } from "./gen/bookmesh/rental/v1/rental_pb.js";

/** Where the services are; `make run` serves them on these ports. */
export const addresses = {
  book: process.env.BOOKMESH_BOOK ?? "localhost:50051",
  member: process.env.BOOKMESH_MEMBER ?? "localhost:50052",
  rental: process.env.BOOKMESH_RENTAL ?? "localhost:50053",
  bestbook: process.env.BOOKMESH_BESTBOOK ?? "localhost:50054",
};

/** Deadline of one call, in milliseconds. */
export const DEFAULT_TIMEOUT_MS = 2000;

export interface Mesh {
  books: Client<typeof BookService>;
  members: Client<typeof MemberService>;
  rentals: Client<typeof RentalService>;
  bestBooks: Client<typeof BestBookService>;
}

/**
 * How to prove who is calling: the authority the servers' certificates must chain to (`make
 * run`'s is data/pki/ca.crt), the user's bearer token (`make -s token ROLE=...`), and for a
 * workload its own certificate and key. Defaults: BOOKMESH_CA, BOOKMESH_TOKEN,
 * BOOKMESH_CLIENT_CERT, BOOKMESH_CLIENT_KEY.
 */
export interface Credentials {
  ca?: string;
  token?: string;
  certificate?: string;
  key?: string;
}

function fromEnvironment(): Credentials {
  return {
    ca: process.env.BOOKMESH_CA ?? "data/pki/ca.crt",
    token: process.env.BOOKMESH_TOKEN,
    certificate: process.env.BOOKMESH_CLIENT_CERT,
    key: process.env.BOOKMESH_CLIENT_KEY,
  };
}

/** Clients for every service, over gRPC (HTTP/2 with TLS) as the Rust services speak it. */
export function connectMesh(targets = addresses, credentials: Credentials = fromEnvironment()): Mesh {
  const read = (path?: string) => (path ? readFileSync(path) : undefined);
  const nodeOptions = { ca: read(credentials.ca), cert: read(credentials.certificate), key: read(credentials.key) };
  const bearer: Interceptor = (next) => async (request) => {
    if (credentials.token) request.header.set("authorization", `Bearer ${credentials.token}`);
    return next(request);
  };
  const transport = (target: string) =>
    createGrpcTransport({ baseUrl: `https://${target}`, nodeOptions, interceptors: [bearer] });
  return {
    books: createClient(BookService, transport(targets.book)),
    members: createClient(MemberService, transport(targets.member)),
    rentals: createClient(RentalService, transport(targets.rental)),
    bestBooks: createClient(BestBookService, transport(targets.bestbook)),
  };
}

/**
 * Runs `call` with a deadline; retries UNAVAILABLE with jittered exponential backoff.
 * Only for calls that are safe to repeat (the proto comments say which).
 */
export async function withRetry<T>(
  call: (options: { timeoutMs: number }) => Promise<T>,
  attempts = 3,
  timeoutMs = DEFAULT_TIMEOUT_MS,
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await call({ timeoutMs });
    } catch (error) {
      const unavailable = error instanceof ConnectError && error.code === Code.Unavailable;
      if (!unavailable || attempt >= attempts) throw error;
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 50 * 2 ** attempt));
    }
  }
}

/** The offending fields of an INVALID_ARGUMENT, from its google.rpc.BadRequest detail. */
export function fieldViolations(error: unknown): Record<string, string> {
  const violations: Record<string, string> = {};
  if (!(error instanceof ConnectError)) return violations;
  for (const detail of error.details) {
    // Details of a received error arrive undecoded: `type` names the message, `value` holds it.
    if (!("type" in detail) || detail.type !== "google.rpc.BadRequest" || !(detail.value instanceof Uint8Array)) {
      continue;
    }
    // BadRequest { repeated FieldViolation field_violations = 1 }
    // FieldViolation { string field = 1; string description = 2 }
    const outer = new BinaryReader(detail.value);
    while (outer.pos < outer.len) {
      const [number, wireType] = outer.tag();
      if (number !== 1 || wireType !== WireType.LengthDelimited) {
        outer.skip(wireType);
        continue;
      }
      const inner = new BinaryReader(outer.bytes());
      let field = "";
      let description = "";
      while (inner.pos < inner.len) {
        const [n, w] = inner.tag();
        if (n === 1) field = inner.string();
        else if (n === 2) description = inner.string();
        else inner.skip(w);
      }
      violations[field] = description;
    }
  }
  return violations;
}

/** Why an UNAUTHENTICATED or PERMISSION_DENIED was refused (google.rpc.ErrorInfo.reason). */
export function refusalReason(error: unknown): string | undefined {
  if (!(error instanceof ConnectError)) return undefined;
  for (const detail of error.details) {
    if (!("type" in detail) || detail.type !== "google.rpc.ErrorInfo" || !(detail.value instanceof Uint8Array)) {
      continue;
    }
    // ErrorInfo { string reason = 1; string domain = 2; map<string, string> metadata = 3 }
    const reader = new BinaryReader(detail.value);
    while (reader.pos < reader.len) {
      const [number, wireType] = reader.tag();
      if (number === 1) return reader.string();
      reader.skip(wireType);
    }
  }
  return undefined;
}

/** Polls `probe` until it returns a value; the sagas are eventually consistent. */
export async function waitUntil<T>(probe: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
