//! Reading who signed a request. Signatures are parsed, not verified: the emulator only needs the access key (to
//! know the calling account) and the credential scope's region.

/// The parts of `Authorization: AWS4-HMAC-SHA256 Credential=AKID/20261128/eu-west-1/dynamodb/aws4_request, ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedBy {
    pub access_key_id: String,
    pub region: String,
    pub service: String,
}

pub fn parse_authorization(header: &str) -> Option<SignedBy> {
    let rest = header.strip_prefix("AWS4-HMAC-SHA256")?.trim_start();
    let credential = rest
        .split(',')
        .map(str::trim)
        .find_map(|part| part.strip_prefix("Credential="))?;
    let mut scope = credential.split('/');
    let access_key_id = scope.next()?.to_owned();
    let _date = scope.next()?;
    let region = scope.next()?.to_owned();
    let service = scope.next()?.to_owned();
    Some(SignedBy {
        access_key_id,
        region,
        service,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_credential_scope() {
        let header = "AWS4-HMAC-SHA256 Credential=AKIAX/20261128/eu-west-1/dynamodb/aws4_request, \
                      SignedHeaders=host;x-amz-date, Signature=abc";
        assert_eq!(
            parse_authorization(header),
            Some(SignedBy {
                access_key_id: "AKIAX".into(),
                region: "eu-west-1".into(),
                service: "dynamodb".into()
            })
        );
        assert_eq!(parse_authorization("Basic x"), None);
    }
}
