//! The tablecrypt.v1 API as generated Rust: messages, the `TableEncryption` server trait and client.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod v1 {
    tonic::include_proto!("tablecrypt.v1");
}

/// The `tablecrypt` CLI's environment variables, less their `TABLECRYPT_` prefix, lower case (figment's keys).
/// The server ignores them: users export them in the shell they start a local server from. The CLI's own test
/// checks that every `env` it reads is listed here, and the server's that none is a server setting.
pub const CLI_ENVIRONMENT_KEYS: &[&str] = &[
    "server",
    "token",
    "ca_cert",
    "client_cert",
    "client_key",
    "tls_domain",
    "caller",
    "output",
    "external_id",
];

/// The response header every answer of the gRPC listener carries: the server's version, for
/// `tablecrypt --version`.
pub const SERVER_VERSION_HEADER: &str = "tablecrypt-server-version";

/// The `google.rpc.ErrorInfo` domain of tablecrypt's error reasons.
pub const ERROR_DOMAIN: &str = "tablecrypt";
/// ErrorInfo reason on a PERMISSION_DENIED that AWS, not tablecrypt, refused: the member (or organization) role
/// lacks a permission or cannot be assumed. Metadata `role_refused` is "true" when AssumeRole itself failed.
pub const AWS_ACCESS_DENIED_REASON: &str = "AWS_ACCESS_DENIED";

/// A gRPC code's canonical name ("PERMISSION_DENIED"), as grpcurl prints it and the audit log stores it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The encoded `FileDescriptorSet` of the API, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tablecrypt_descriptor");

/// The names of `TableEncryption`'s methods ("ListAccounts", ...), from the descriptor set: what a path may name
/// before it is one of ours (the audit log and metrics never take a caller-chosen path as a name).
pub fn api_methods() -> &'static std::collections::HashSet<String> {
    static METHODS: std::sync::LazyLock<std::collections::HashSet<String>> =
        std::sync::LazyLock::new(|| {
            let Ok(set) =
                <prost_types::FileDescriptorSet as prost::Message>::decode(FILE_DESCRIPTOR_SET)
            else {
                return std::collections::HashSet::new();
            };
            set.file
                .iter()
                .flat_map(|file| file.service.iter())
                .filter(|service| service.name() == "TableEncryption")
                .flat_map(|service| service.method.iter().map(|m| m.name().to_owned()))
                .collect()
        });
    &METHODS
}
