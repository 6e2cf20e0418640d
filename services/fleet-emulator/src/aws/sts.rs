//! STS: AssumeRole and GetCallerIdentity.

use chrono::Duration;
use rand::Rng as _;

use super::AwsError;
use super::protocol::xml_escape;
use crate::world::{Caller, Session, World, lock};

/// AssumeRole's DurationSeconds bounds (STS API reference: 900 s to the role's maximum, at most 12 h).
const MIN_DURATION_SECONDS: i64 = 900;
const MAX_DURATION_SECONDS: i64 = 43_200;
const DEFAULT_DURATION_SECONDS: i64 = 3_600;

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn random_token(prefix: &str, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    let tail: String = (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{tail}")
}

/// Runs an STS action; the `String` is the XML inside `<{Action}Result>`.
pub fn handle(
    world: &World,
    caller: &Caller,
    action: &str,
    params: &[(String, String)],
) -> Result<String, AwsError> {
    match action {
        "GetCallerIdentity" => Ok(format!(
            "<Arn>{}</Arn><UserId>{}</UserId><Account>{}</Account>",
            xml_escape(&caller.arn),
            xml_escape(&caller.user_id),
            caller.account_id
        )),
        "AssumeRole" => assume_role(world, caller, params),
        other => Err(AwsError::new(
            400,
            "InvalidAction",
            format!("Could not find operation {other} for version 2011-06-15"),
        )),
    }
}

fn assume_role(
    world: &World,
    caller: &Caller,
    params: &[(String, String)],
) -> Result<String, AwsError> {
    let role_arn = param(params, "RoleArn")
        .ok_or_else(|| AwsError::new(400, "ValidationError", "RoleArn is required"))?;
    let session_name = param(params, "RoleSessionName")
        .ok_or_else(|| AwsError::new(400, "ValidationError", "RoleSessionName is required"))?;
    if session_name.len() < 2 || session_name.len() > 64 {
        return Err(AwsError::new(
            400,
            "ValidationError",
            "RoleSessionName must be 2 to 64 characters",
        ));
    }
    let duration = match param(params, "DurationSeconds") {
        None => DEFAULT_DURATION_SECONDS,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|d| (MIN_DURATION_SECONDS..=MAX_DURATION_SECONDS).contains(d))
            .ok_or_else(|| {
                AwsError::new(
                    400,
                    "ValidationError",
                    format!(
                        "1 validation error detected: Value '{text}' at 'durationSeconds' failed to satisfy \
                         constraint: Member must have value between {MIN_DURATION_SECONDS} and {MAX_DURATION_SECONDS}"
                    ),
                )
            })?,
    };
    let denied = || {
        AwsError::new(
            403,
            "AccessDenied",
            format!(
                "User: {} is not authorized to perform: sts:AssumeRole on resource: {role_arn}",
                caller.arn
            ),
        )
    };
    // arn:aws:iam::<account>:role/<path/>name
    let parts: Vec<&str> = role_arn.splitn(6, ':').collect();
    let [_, _, "iam", "", account_id, resource] = parts.as_slice() else {
        return Err(AwsError::new(
            400,
            "ValidationError",
            format!("{role_arn} is not a valid role ARN"),
        ));
    };
    let Some(role_name) = resource
        .strip_prefix("role/")
        .map(|r| r.rsplit('/').next().unwrap_or(r))
    else {
        return Err(AwsError::new(
            400,
            "ValidationError",
            format!("{role_arn} is not a valid role ARN"),
        ));
    };
    let account = world.existing_account(account_id).ok_or_else(denied)?;
    let role = lock(&account)
        .roles
        .get(role_name)
        .cloned()
        .ok_or_else(denied)?;
    if let Some(expected) = &role.external_id
        && param(params, "ExternalId") != Some(expected.as_str())
    {
        return Err(denied());
    }

    let access_key_id = random_token("ASIA", 16);
    let secret = random_token("", 40);
    let token = random_token("FwoGZXIvYXdzE", 120);
    let expires = world.clock.now() + Duration::seconds(duration);
    let role_id = format!("AROA{}", &random_token("", 17));
    let user_id = format!("{role_id}:{session_name}");
    let arn = format!("arn:aws:sts::{account_id}:assumed-role/{role_name}/{session_name}");
    world.add_session(
        access_key_id.clone(),
        Session {
            account_id: (*account_id).to_owned(),
            arn: arn.clone(),
            user_id: user_id.clone(),
            expires,
        },
    );
    Ok(format!(
        "<Credentials><AccessKeyId>{access_key_id}</AccessKeyId><SecretAccessKey>{secret}</SecretAccessKey>\
         <SessionToken>{token}</SessionToken><Expiration>{}</Expiration></Credentials>\
         <AssumedRoleUser><AssumedRoleId>{}</AssumedRoleId><Arn>{}</Arn></AssumedRoleUser>",
        expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        xml_escape(&user_id),
        xml_escape(&arn)
    ))
}
