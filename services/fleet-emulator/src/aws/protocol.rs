//! Rendering responses and errors the way each service's protocol does, so the AWS SDKs parse them.

use axum::body::Body;
use axum::response::Response;
use serde_json::{Value, json};

use super::AwsError;

/// The three emulated services and their wire protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// awsQuery (form-encoded request, XML response).
    Sts,
    /// awsQuery, like STS.
    Sns,
    /// awsJson1_1, `X-Amz-Target: TrentService.<Op>`.
    Kms,
    /// awsJson1_0, `X-Amz-Target: DynamoDB_20120810.<Op>`.
    DynamoDb,
    /// awsJson1_1, `X-Amz-Target: ResourceGroupsTaggingAPI_20170126.<Op>`.
    Tagging,
    /// awsJson1_1, `X-Amz-Target: AWSOrganizationsV20161128.<Op>`.
    Organizations,
    /// Account Management, restJson1 (`POST /listRegions`).
    Account,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sts => "sts",
            Self::Sns => "sns",
            Self::Kms => "kms",
            Self::DynamoDb => "dynamodb",
            Self::Tagging => "tagging",
            Self::Organizations => "organizations",
            Self::Account => "account",
        }
    }
}

fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn response(status: u16, content_type: &str, body: String) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("x-amzn-requestid", request_id())
        .body(Body::from(body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// A JSON-protocol answer (DynamoDB, KMS).
pub fn json_result(service: Service, result: Result<Value, AwsError>) -> Response {
    let content_type = match service {
        Service::DynamoDb => "application/x-amz-json-1.0",
        Service::Account => "application/json",
        _ => "application/x-amz-json-1.1",
    };
    match result {
        Ok(value) => response(200, content_type, value.to_string()),
        Err(error) => {
            let error_type = match (service, error.code) {
                (Service::DynamoDb, "ThrottlingException") => {
                    "com.amazon.coral.availability#ThrottlingException".to_owned()
                }
                (Service::DynamoDb, code) => format!("com.amazonaws.dynamodb.v20120810#{code}"),
                (_, code) => code.to_owned(),
            };
            let body = json!({"__type": error_type, "message": error.message});
            response(error.status, content_type, body.to_string())
        }
    }
}

pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// An awsQuery (STS, SNS) answer: `<{Action}Response><{Action}Result>{inner}</...>`, or an `ErrorResponse`.
pub fn query_result(service: Service, action: &str, result: Result<String, AwsError>) -> Response {
    let ns = match service {
        Service::Sns => "http://sns.amazonaws.com/doc/2010-03-31/",
        _ => "https://sts.amazonaws.com/doc/2011-06-15/",
    };
    match result {
        Ok(inner) => response(
            200,
            "text/xml",
            format!(
                "<{action}Response xmlns=\"{ns}\"><{action}Result>{inner}</{action}Result>\
                 <ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></{action}Response>",
                request_id()
            ),
        ),
        Err(error) => {
            let kind = if error.status >= 500 {
                "Receiver"
            } else {
                "Sender"
            };
            response(
                error.status,
                "text/xml",
                format!(
                    "<ErrorResponse xmlns=\"{ns}\"><Error><Type>{kind}</Type><Code>{}</Code><Message>{}</Message>\
                     </Error><RequestId>{}</RequestId></ErrorResponse>",
                    error.code,
                    xml_escape(&error.message),
                    request_id()
                ),
            )
        }
    }
}

/// An error in the protocol of `service`, for failures found before dispatch (auth, faults).
pub fn error_for(service: Service, action: &str, error: AwsError) -> Response {
    match service {
        Service::Sts | Service::Sns => {
            // STS (and SNS) name some errors differently from the JSON services.
            let error = match error.code {
                "UnrecognizedClientException" => AwsError {
                    code: "InvalidClientTokenId",
                    ..error
                },
                "ThrottlingException" => AwsError {
                    code: "Throttling",
                    ..error
                },
                "InternalServerError" => AwsError {
                    code: "InternalFailure",
                    ..error
                },
                _ => error,
            };
            query_result(service, action, Err(error))
        }
        Service::Kms => {
            let error = match error.code {
                "InternalServerError" => AwsError {
                    code: "KMSInternalException",
                    ..error
                },
                _ => error,
            };
            json_result(service, Err(error))
        }
        Service::DynamoDb | Service::Tagging => json_result(service, Err(error)),
        Service::Organizations | Service::Account => {
            // Both throttle as TooManyRequestsException; Organizations fails as ServiceException.
            let code = match (service, error.code) {
                (_, "ThrottlingException") => "TooManyRequestsException",
                (Service::Organizations, "InternalServerError") => "ServiceException",
                (_, "InternalServerError") => "InternalServerException",
                (_, code) => code,
            };
            json_result(service, Err(AwsError { code, ..error }))
        }
    }
}
