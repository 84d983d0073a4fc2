use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc keeps the build free of system packages.
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { env::set_var("PROTOC", protoc) };

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let files = [
        "arbiter/v1/common.proto",
        "arbiter/v1/decision.proto",
        "arbiter/v1/control.proto",
        "arbiter/v1/admin.proto",
        "arbiter/v1/audit.proto",
    ];
    // Messages and clients, with tonic's prost codec.
    tonic_prost_build::configure()
        .build_server(false)
        .file_descriptor_set_path(out_dir.join("arbiter_descriptor.bin"))
        .compile_protos(&files, &["."])?;
    // The servers alone (the messages are the ones above), with `codec::RequestCodec`
    // so an undecodable request is INVALID_ARGUMENT, not INTERNAL.
    let servers = out_dir.join("servers");
    std::fs::create_dir_all(&servers)?;
    tonic_prost_build::configure()
        .build_client(false)
        .out_dir(&servers)
        .extern_path(".arbiter.v1", "crate::v1")
        .codec_path("crate::codec::RequestCodec")
        .compile_protos(&files, &["."])?;
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    Ok(())
}
