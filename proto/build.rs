//! Compiles proto/criu and proto/cryo with protox (a protobuf compiler in pure Rust), so
//! building cryo never needs `protoc`.

fn main() {
    let files = ["criu/core.proto", "cryo/cryo.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."]).expect("compile .proto files");
    prost_build::Config::new()
        .compile_fds(fds)
        .expect("generate Rust from .proto files");
}
