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
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("arbiter_descriptor.bin"))
        .compile_protos(&files, &["."])?;
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    Ok(())
}
