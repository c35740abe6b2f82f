//! Compiles every contract under `proto/` into Rust with no system `protoc`:
//! protox parses the files in pure Rust, tonic-prost-build generates messages, servers and
//! clients, and the encoded descriptor set is written next to them for gRPC reflection.

use std::path::{Path, PathBuf};

use prost::Message;

fn proto_files(dir: &Path, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            proto_files(&path, found)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            found.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new("proto");
    let mut files = Vec::new();
    proto_files(root, &mut files)?;
    // Sorted so the generated code and descriptor set do not change with directory order.
    files.sort();
    println!("cargo:rerun-if-changed=proto");

    // Imports are included so that reflection clients can resolve google/protobuf/* themselves.
    let descriptors = protox::Compiler::new([root])?
        .include_imports(true)
        .include_source_info(true)
        .open_files(&files)?
        .file_descriptor_set();

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("bookmesh_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    // Every message implements `prost::Name`: event envelopes take their `event_type` (and
    // `Any` type URL) from it, so no list of event types is written by hand.
    let mut messages = prost_build::Config::new();
    messages
        .enable_type_names()
        .type_name_domain(["."], "type.googleapis.com");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds_with_config(descriptors, messages)?;
    Ok(())
}
