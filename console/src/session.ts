// Who is signed in: the bearer token and what it says about its holder, kept in
// sessionStorage (one browser tab's life, never written to disk by the page) so a reload keeps
// the session and closing the tab ends it.

export interface Session {
  token: string;
  /** The token's subject: a member id, or a staff account's name. */
  subject: string;
  roles: string[];
  /** When the token expires (ms since the epoch), when known. */
  expiresAt?: number;
}

const KEY = "bookmesh.session";
const listeners = new Set<() => void>();

export function currentSession(): Session | undefined {
  const raw = sessionStorage.getItem(KEY);
  if (!raw) return undefined;
  try {
    const session = JSON.parse(raw) as Session;
    // An expired token would only earn UNAUTHENTICATED answers: forget it.
    if (session.expiresAt !== undefined && session.expiresAt <= Date.now()) {
      sessionStorage.removeItem(KEY);
      return undefined;
    }
    return session;
  } catch {
    sessionStorage.removeItem(KEY);
    return undefined;
  }
}

export function currentToken(): string | undefined {
  return currentSession()?.token;
}

export function hasRole(role: string): boolean {
  return currentSession()?.roles.includes(role) ?? false;
}

export function signIn(session: Session): void {
  sessionStorage.setItem(KEY, JSON.stringify(session));
  notify();
}

export function signOut(): void {
  sessionStorage.removeItem(KEY);
  notify();
}

/** Calls `listener` after every sign-in and sign-out. */
export function onSessionChange(listener: () => void): void {
  listeners.add(listener);
}

function notify(): void {
  for (const listener of listeners) listener();
}

/**
 * A session from a pasted token. The page cannot verify the signature (the services do), it
 * only reads the claims to show who the token is for: `sub`, `roles` (or `role`), `exp`.
 */
export function sessionFromToken(token: string): Session {
  const claims = readClaims(token);
  const roles = Array.isArray(claims.roles)
    ? claims.roles.map(String)
    : typeof claims.role === "string"
      ? [claims.role]
      : [];
  return {
    token,
    subject: typeof claims.sub === "string" ? claims.sub : "(pasted token)",
    roles,
    expiresAt: typeof claims.exp === "number" ? claims.exp * 1000 : undefined,
  };
}

function readClaims(token: string): Record<string, unknown> {
  const payload = token.split(".")[1];
  if (!payload) return {};
  try {
    const base64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    const claims: unknown = JSON.parse(new TextDecoder().decode(bytes));
    return typeof claims === "object" && claims !== null ? (claims as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}
