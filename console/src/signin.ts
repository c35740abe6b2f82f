// The sign-in bar. With development sign-in on (GET /auth/config), the gateway signs a token
// for a role picked here (POST /auth/dev-token); without it, sign-in is the OIDC provider's
// (docs/gateway.md) and a token from it can be pasted. Either way the token lives in the
// session (session.ts) and the gRPC-Web interceptor sends it.

import { describeError, fetchJson } from "./api";
import { h, replace } from "./dom";
import { recent } from "./recent";
import { currentSession, sessionFromToken, signIn, signOut } from "./session";

interface AuthConfig {
  dev_sign_in: boolean;
}

interface DevToken {
  token: string;
  subject: string;
  roles: string[];
  expires_in_seconds: number;
}

/** Asked once per page load: whether the gateway offers development sign-in. */
let config: Promise<AuthConfig> | undefined;
let expiryTimer: ReturnType<typeof setTimeout> | undefined;

export function renderSignIn(bar: HTMLElement): void {
  clearTimeout(expiryTimer);
  const session = currentSession();
  if (session) {
    // Sign out when the token expires, rather than let every call fail UNAUTHENTICATED.
    if (session.expiresAt !== undefined) {
      expiryTimer = setTimeout(signOut, Math.min(session.expiresAt - Date.now(), 2 ** 31 - 1));
    }
    const until = session.expiresAt ? ` · until ${new Date(session.expiresAt).toLocaleTimeString()}` : "";
    replace(
      bar,
      h(
        "span",
        { class: "who", "data-testid": "signin-who", "data-roles": session.roles.join(" ") },
        "Signed in as ",
        h("strong", {}, session.subject),
        ` (${session.roles.join(", ") || "no roles"})${until}`,
      ),
      h("button", { type: "button", class: "quiet", "data-testid": "signout", onclick: () => signOut() }, "Sign out"),
    );
    return;
  }

  replace(bar, h("span", { class: "muted" }, "…"));
  config ??= fetchJson<AuthConfig>("/auth/config");
  config.then(
    (answer) => {
      // Signed in meanwhile (another render won): leave that one.
      if (currentSession()) return;
      replace(bar, ...(answer.dev_sign_in ? devForm() : pasteForm("Production sign-in is through the OIDC provider (docs/gateway.md).")));
    },
    (error: unknown) => {
      if (currentSession()) return;
      config = undefined; // ask again on the next render
      replace(bar, ...pasteForm(`Could not read /auth/config (${describeError(error)}).`));
    },
  );
}

/** Role picker, member id for role member, and the gateway's development token. */
function devForm(): HTMLElement[] {
  const role = h(
    "select",
    { "aria-label": "role", "data-testid": "signin-role" },
    h("option", { value: "librarian" }, "librarian"),
    h("option", { value: "admin" }, "admin (staff + faults)"),
    h("option", { value: "member" }, "member"),
  );
  const memberId = h("input", {
    "aria-label": "member id",
    placeholder: "member id",
    name: "member_id",
    autocomplete: "off",
    "data-testid": "signin-member-id",
  });
  memberId.value = recent.memberId;
  const error = h("span", { class: "signin-error", role: "alert", "data-testid": "signin-error" });
  const submit = h("button", { type: "submit", "data-testid": "signin-submit" }, "Sign in");
  const showMemberId = () => (memberId.hidden = role.value !== "member");
  role.addEventListener("change", showMemberId);
  showMemberId();

  const form = h("form", { class: "signin", "data-testid": "signin-form" }, h("span", { class: "muted" }, "Development sign-in:"), role, memberId, submit, error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    submit.disabled = true;
    try {
      const request =
        role.value === "member" ? { role: "member", member_id: memberId.value.trim() } : { role: role.value };
      const answer = await fetchJson<DevToken>("/auth/dev-token", { method: "POST", body: request });
      signIn({
        token: answer.token,
        subject: answer.subject,
        roles: answer.roles,
        expiresAt: Date.now() + answer.expires_in_seconds * 1000,
      });
    } catch (failure) {
      error.textContent = describeError(failure);
    } finally {
      submit.disabled = false;
    }
  });
  return [form];
}

/** A note on how to sign in, and a field for a token obtained elsewhere. */
function pasteForm(note: string): HTMLElement[] {
  const token = h("input", {
    type: "password",
    "aria-label": "bearer token",
    placeholder: "paste a bearer token",
    autocomplete: "off",
    "data-testid": "signin-token",
  });
  const error = h("span", { class: "signin-error", role: "alert", "data-testid": "signin-error" });
  const form = h(
    "form",
    { class: "signin", "data-testid": "signin-form" },
    h("span", { class: "muted", "data-testid": "signin-note" }, note),
    token,
    h("button", { type: "submit", "data-testid": "signin-submit" }, "Use token"),
    error,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = token.value.trim().replace(/^Bearer\s+/i, "");
    if (!value) {
      error.textContent = "Paste a token first.";
      return;
    }
    signIn(sessionFromToken(value));
  });
  return [form];
}
