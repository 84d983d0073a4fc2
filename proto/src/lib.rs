//! Generated code for the `arbiter.v1` gRPC contract (see `proto/arbiter/v1/`).

#![allow(clippy::all, missing_docs)]

pub mod codec;

pub mod v1 {
    tonic::include_proto!("arbiter.v1");
    include!(concat!(env!("OUT_DIR"), "/servers/arbiter.v1.rs"));
}

/// Encoded `FileDescriptorSet` for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("arbiter_descriptor");
