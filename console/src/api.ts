// How the console talks to the gateway: gRPC-Web for the services' RPCs (generated clients,
// the signed-in user's token added by an interceptor), JSON for the gateway's own endpoints
// (sign-in, mesh, faults), and the errors of both turned into something to show.

import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";

import { BestBookService } from "./gen/bookmesh/bestbook/v1/bestbook_pb";
import { BookService } from "./gen/bookmesh/book/v1/book_pb";
import { MemberService } from "./gen/bookmesh/member/v1/member_pb";
import { RentalService } from "./gen/bookmesh/rental/v1/rental_pb";
import { BadRequestSchema } from "./gen/google/rpc/error_details_pb";
import { currentToken } from "./session";

/** Deadline of one unary call (sent as grpc-timeout; the gateway caps it with its own). */
export const CALL_TIMEOUT_MS = 10_000;

/**
 * Adds the signed-in user's token to every call. Read at each call rather than captured once,
 * so signing in or out takes effect without rebuilding the clients.
 */
const bearer: Interceptor = (next) => async (request) => {
  const token = currentToken();
  if (token) request.header.set("authorization", `Bearer ${token}`);
  return next(request);
};

// The gateway serves gRPC-Web on the console's own origin. Binary rather than base64 text:
// smaller, and the gateway accepts both.
const transport = createGrpcWebTransport({
  baseUrl: location.origin,
  useBinaryFormat: true,
  interceptors: [bearer],
});

export const books = createClient(BookService, transport);
export const members = createClient(MemberService, transport);
export const rentals = createClient(RentalService, transport);
export const bestBooks = createClient(BestBookService, transport);

export interface FieldViolation {
  field: string;
  description: string;
}

/** The offending fields of an INVALID_ARGUMENT, from its google.rpc.BadRequest detail. */
export function fieldViolations(error: unknown): FieldViolation[] {
  if (!(error instanceof ConnectError)) return [];
  return error
    .findDetails(BadRequestSchema)
    .flatMap((badRequest) =>
      badRequest.fieldViolations.map(({ field, description }) => ({ field, description })),
    );
}

/** A gRPC code as the gateway's JSON and the docs write it: `invalid_argument`. */
export function codeName(code: Code): string {
  return (Code[code] ?? String(code)).replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();
}

/** The code of an error as a name, or undefined for errors that are not RPC errors. */
export function errorCode(error: unknown): Code | undefined {
  return error instanceof ConnectError ? error.code : undefined;
}

/**
 * One line for people: the code and the server's message, and what to do about the codes a
 * user can act on.
 */
export function describeError(error: unknown): string {
  if (error instanceof ConnectError) {
    const line = `${codeName(error.code)}: ${error.rawMessage || "(no message)"}`;
    switch (error.code) {
      case Code.Unauthenticated:
        return `${line} — use the sign-in at the top right.`;
      case Code.PermissionDenied:
        return `${line} — the signed-in role may not do this.`;
      case Code.Unavailable:
        return `${line} — the service is unavailable; try again shortly.`;
      default:
        return line;
    }
  }
  if (error instanceof HttpError) return error.message;
  if (error instanceof Error) return error.message;
  return String(error);
}

/**
 * describeError with the field violations spelled out, for places that have no form field to
 * put them next to ("invalid_argument: … (member_id: must be a UUID)").
 */
export function explainError(error: unknown): string {
  const violations = fieldViolations(error);
  const line = describeError(error);
  if (violations.length === 0) return line;
  return `${line} (${violations.map(({ field, description }) => `${field}: ${description}`).join("; ")})`;
}

/** A non-2xx answer of one of the gateway's JSON endpoints. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    /** The gateway's error code (`invalid_argument`), when the body had one. */
    readonly code: string | undefined,
    message: string,
  ) {
    super(message);
    this.name = "HttpError";
  }
}

/**
 * Calls one of the gateway's JSON endpoints (/auth/..., /api/...) and parses the answer.
 * Errors become an HttpError with the body's `message` (or `error`) when there is one.
 * The signed-in user's token goes along unless `auth` is false: the gateway asks for one on
 * /api/* whenever the services verify tokens, and the fault switches forward it.
 */
export async function fetchJson<T>(
  path: string,
  init: { method?: string; body?: unknown; auth?: boolean; signal?: AbortSignal } = {},
): Promise<T> {
  const headers: Record<string, string> = { accept: "application/json" };
  if (init.body !== undefined) headers["content-type"] = "application/json";
  const token = init.auth === false ? undefined : currentToken();
  if (token) headers.authorization = `Bearer ${token}`;
  let response: Response;
  try {
    response = await fetch(path, {
      method: init.method ?? "GET",
      headers,
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
      signal: init.signal ?? AbortSignal.timeout(CALL_TIMEOUT_MS),
    });
  } catch (error) {
    if (init.signal?.aborted) throw error;
    throw new HttpError(0, undefined, `the gateway did not answer (${(error as Error).message})`);
  }
  const text = await response.text();
  let body: unknown;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    body = undefined;
  }
  if (!response.ok) {
    const fields = typeof body === "object" && body !== null ? (body as Record<string, unknown>) : {};
    const code = typeof fields.code === "string" ? fields.code : undefined;
    const detail =
      typeof fields.message === "string"
        ? fields.message
        : typeof fields.error === "string"
          ? fields.error
          : text.slice(0, 200) || response.statusText;
    throw new HttpError(
      response.status,
      code,
      `${method(init)} ${path}: HTTP ${response.status}${code ? ` ${code}` : ""}: ${detail}`,
    );
  }
  if (body === undefined) {
    throw new HttpError(response.status, undefined, `${method(init)} ${path}: the answer is not JSON`);
  }
  return body as T;
}

function method(init: { method?: string }): string {
  return init.method ?? "GET";
}
