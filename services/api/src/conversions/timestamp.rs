//! `google.protobuf.Timestamp` from chrono.

use chrono::{DateTime, Utc};

pub fn to_proto(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}
