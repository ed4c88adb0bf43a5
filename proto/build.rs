//! Build script: compiles the `.proto` files under `criu/` (CRIU's image messages,
//! package `criu`) and `cryo/` (cryo's own records, package `cryo`) into Rust with
//! prost, writing `criu.rs` and `cryo.rs` to `OUT_DIR`.
//!
//! Why protox: prost-build normally shells out to Google's `protoc` to parse `.proto`
//! files. protox is a protobuf compiler written in Rust; it parses the files into a
//! `FileDescriptorSet` inside this build script, and `Config::compile_fds` generates
//! code from that. So building cryo needs no `protoc` binary, no system package and no
//! network download: `cargo build` alone is enough on any machine.

use std::fs;
use std::path::Path;

fn proto_files(dir: &str) -> Vec<String> {
    let mut files: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {dir}: {e}"))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .map(|p| p.to_str().expect("UTF-8 path").to_owned())
        .collect();
    files.sort();
    files
}

fn main() {
    // Paths are relative to the crate root, which is also the import root:
    // `import "criu/fown.proto";`.
    let mut files = proto_files("criu");
    files.extend(proto_files("cryo"));

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=criu");
    println!("cargo:rerun-if-changed=cryo");
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    assert!(
        Path::new("criu/core.proto").exists(),
        "criu/core.proto is missing"
    );

    let fds = protox::compile(&files, ["."]).unwrap_or_else(|e| panic!("protox: {e:?}"));
    prost_build::Config::new()
        .compile_fds(fds)
        .expect("generate Rust code from the .proto files");
}
