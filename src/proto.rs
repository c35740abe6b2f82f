//! Code generated from `proto/` by `build.rs`: messages, tonic servers and tonic clients.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// The encoded `FileDescriptorSet` of every contract (with its imports), served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/bookmesh_descriptor.bin"));

pub mod bestbook {
    pub mod v1 {
        tonic::include_proto!("bookmesh.bestbook.v1");
    }
}

pub mod book {
    pub mod v1 {
        tonic::include_proto!("bookmesh.book.v1");
    }
}

pub mod events {
    pub mod v1 {
        tonic::include_proto!("bookmesh.events.v1");
    }
}

pub mod member {
    pub mod v1 {
        tonic::include_proto!("bookmesh.member.v1");
    }
}

pub mod notification {
    pub mod v1 {
        tonic::include_proto!("bookmesh.notification.v1");
    }
}

pub mod rental {
    pub mod v1 {
        tonic::include_proto!("bookmesh.rental.v1");
    }
}

/// Converts between `chrono` instants and `google.protobuf.Timestamp` at the API edge.
pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        // Always below 2e9, so the cast cannot truncate.
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}
