//! Home of the workspace-level tests (see the `[[test]]` targets); no code of its own.
