//! Compiles proto/tablecrypt/v1 with protox (pure Rust; no system protoc) and generates tonic code.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not baked in when it is compiled: clones of the repository sharing one target
    // directory (CI's fresh clone, a worktree) reuse the compiled script.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "tablecrypt/v1/account.proto",
        "tablecrypt/v1/change_request.proto",
        "tablecrypt/v1/inventory.proto",
        "tablecrypt/v1/table_encryption.proto",
    ];
    let descriptors = protox::compile(files, [&root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("tablecrypt_descriptor.bin");
    std::fs::write(
        &descriptor_path,
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        // `prost::Name` on every message lets the CLI find it in the descriptor set to print it as JSON.
        .compile_fds_with_config(descriptors, {
            let mut config = prost_build::Config::new();
            config.enable_type_names();
            config
        })?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
