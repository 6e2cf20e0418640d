//! The tablecrypt.v1 API as generated Rust: messages, the `TableEncryption` server trait and client.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod v1 {
    tonic::include_proto!("tablecrypt.v1");
}

/// The encoded `FileDescriptorSet` of the API, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tablecrypt_descriptor");
