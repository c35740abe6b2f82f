//! Builds the console (`console/dist`, made by `make console`) into the binary: one
//! `include_bytes!` per file, so the gateway serves it with no files beside it. Without a
//! built console the list is empty and the gateway serves a page that says how to build it.
//! `BOOKMESH_CONSOLE_DIST` names another folder.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=BOOKMESH_CONSOLE_DIST");
    let dist = std::env::var_os("BOOKMESH_CONSOLE_DIST").map_or_else(
        || {
            PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default())
                .join("../../console/dist")
        },
        PathBuf::from,
    );
    // A folder is watched as a whole (any file in it changing reruns this); one that does not
    // exist yet reruns it on every build until it does.
    println!("cargo:rerun-if-changed={}", dist.display());
    let mut files = Vec::new();
    collect(&dist, &dist, &mut files);
    files.sort();
    let mut out = String::from(
        "/// The console's files (path relative to its root, contents), built in.\n\
         pub(crate) static EMBEDDED: &[(&str, &[u8])] = &[\n",
    );
    for (relative, absolute) in &files {
        let _ = writeln!(
            out,
            "    ({relative:?}, include_bytes!({:?})),",
            absolute.display().to_string()
        );
    }
    out.push_str("];\n");
    let target = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("console.rs");
    if let Err(error) = std::fs::write(&target, out) {
        panic!("cannot write {}: {error}", target.display());
    }
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // Not following links: a link loop in the folder must not recurse for ever.
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_symlink() {
            continue;
        }
        if kind.is_dir() {
            collect(root, &path, files);
        } else if let Ok(relative) = path.strip_prefix(root) {
            let relative = relative
                .components()
                .map(|part| part.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            let absolute = path.canonicalize().unwrap_or(path);
            files.push((relative, absolute));
        }
    }
}
