//! Messages as JSON in the proto3 JSON mapping (the same field names and enum names grpcurl prints), through the
//! API's own descriptor set, so the JSON always matches the proto.

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(tablecrypt_proto::FILE_DESCRIPTOR_SET)
        .expect("the API's descriptor set is built with the crate and decodes")
});

/// `message` in proto3 JSON, with fields at their default value included, so scripts can read `failed: 0`.
pub fn to_json<M: prost::Message + prost::Name>(message: &M) -> serde_json::Value {
    let descriptor = POOL
        .get_message_by_name(&M::full_name())
        .expect("every generated message is in the descriptor set");
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .expect("a message decodes as itself");
    dynamic
        .serialize_with_options(
            serde_json::value::Serializer,
            &SerializeOptions::new().skip_default_fields(false),
        )
        .expect("a message serializes to a JSON value")
}

#[cfg(test)]
mod tests {
    use tablecrypt_proto::v1 as pb;

    use super::*;

    #[test]
    fn messages_print_in_the_proto3_json_mapping() {
        let request = pb::ChangeRequest {
            change_request_id: "r1".into(),
            state: pb::ChangeRequestState::Running as i32,
            counts: Some(pb::ItemCounts {
                succeeded: 3,
                total: 4,
                ..Default::default()
            }),
            create_time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            ..Default::default()
        };
        let json = to_json(&request);
        assert_eq!(json["changeRequestId"], "r1");
        assert_eq!(json["state"], "CHANGE_REQUEST_STATE_RUNNING");
        assert_eq!(json["counts"]["succeeded"], 3);
        assert_eq!(json["counts"]["failed"], 0);
        assert_eq!(json["createTime"], "2023-11-14T22:13:20Z");
    }
}
