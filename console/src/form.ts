// Forms whose inputs are named after the request's fields (`member_id`, `email`, ...), so a
// google.rpc.BadRequest from the server lands next to the input it is about. The console does
// no validation of its own: the services' rules are the only ones, and they say which field
// is wrong and why.

import { describeError, fieldViolations } from "./api";
import { h, replace, type Child } from "./dom";

export interface FieldSpec {
  /** The request field's name, as the server's field violations name it. */
  name: string;
  label: string;
  placeholder?: string;
  value?: string;
  /** A hint under the input. */
  hint?: string;
  type?: string;
}

export interface FormSpec {
  /** A short id for test hooks: `form-<id>`, `field-error-<id>-<field>`, `status-<id>`. */
  id: string;
  title: string;
  description?: string;
  fields: FieldSpec[];
  submit: string;
}

export type StatusKind = "info" | "ok" | "error";

export class Form {
  readonly element: HTMLFormElement;
  private readonly inputs = new Map<string, HTMLInputElement>();
  private readonly errors = new Map<string, HTMLElement>();
  private readonly status: HTMLElement;
  private readonly button: HTMLButtonElement;

  constructor(
    private readonly spec: FormSpec,
    onSubmit: (values: Record<string, string>, form: Form) => Promise<void>,
  ) {
    this.button = h("button", { type: "submit", "data-testid": `submit-${spec.id}` }, spec.submit);
    this.status = h("div", { class: "status", role: "status", "data-testid": `status-${spec.id}` });
    // noValidate: the browser's own checks would keep a request from the server, whose
    // answer is the one that counts.
    this.element = h(
      "form",
      { class: "card form", novalidate: true, "data-testid": `form-${spec.id}` },
      h("h2", {}, spec.title),
      spec.description ? h("p", { class: "muted" }, spec.description) : null,
      ...spec.fields.map((field) => this.field(field)),
      h("div", { class: "actions" }, this.button),
      this.status,
    );
    this.element.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.run(onSubmit);
    });
  }

  private field(field: FieldSpec): HTMLElement {
    const id = `${this.spec.id}-${field.name}`;
    const input = h("input", {
      id,
      name: field.name,
      type: field.type ?? "text",
      placeholder: field.placeholder,
      autocomplete: "off",
      "aria-describedby": `${id}-error`,
    });
    input.value = field.value ?? "";
    const error = h("div", {
      id: `${id}-error`,
      class: "field-error",
      "data-testid": `field-error-${this.spec.id}-${field.name}`,
    });
    this.inputs.set(field.name, input);
    this.errors.set(field.name, error);
    return h(
      "div",
      { class: "field" },
      h("label", { for: id }, field.label),
      input,
      field.hint ? h("div", { class: "hint" }, field.hint) : null,
      error,
    );
  }

  values(): Record<string, string> {
    const values: Record<string, string> = {};
    for (const [name, input] of this.inputs) values[name] = input.value.trim();
    return values;
  }

  set(name: string, value: string): void {
    const input = this.inputs.get(name);
    if (input) input.value = value;
  }

  setStatus(kind: StatusKind, ...content: Child[]): void {
    this.status.className = `status ${kind}`;
    this.status.setAttribute("data-kind", kind);
    replace(this.status, ...content);
  }

  private clearErrors(): void {
    for (const [name, error] of this.errors) {
      error.textContent = "";
      this.inputs.get(name)?.removeAttribute("aria-invalid");
    }
    this.setStatus("info");
  }

  /**
   * Shows an error: each field violation next to its input, the code and message in the
   * status line (with the violations no input matches, so none is lost).
   */
  showError(error: unknown): void {
    const unmatched: string[] = [];
    for (const violation of fieldViolations(error)) {
      const slot = this.errors.get(violation.field);
      if (slot) {
        slot.textContent = slot.textContent
          ? `${slot.textContent}; ${violation.description}`
          : violation.description;
        this.inputs.get(violation.field)?.setAttribute("aria-invalid", "true");
      } else {
        unmatched.push(`${violation.field}: ${violation.description}`);
      }
    }
    this.setStatus(
      "error",
      describeError(error),
      ...unmatched.map((line) => h("div", { class: "violation" }, line)),
    );
  }

  private async run(onSubmit: (values: Record<string, string>, form: Form) => Promise<void>) {
    // One request at a time: a double click must not register a book twice (RegisterBook is
    // not idempotent).
    if (this.button.disabled) return;
    this.clearErrors();
    this.button.disabled = true;
    this.setStatus("info", "Working…");
    try {
      await onSubmit(this.values(), this);
    } catch (error) {
      this.showError(error);
    } finally {
      this.button.disabled = false;
    }
  }
}
