//! Member-role permissions: a role in the fleet file may lack actions (`denied_actions: [kms:CreateGrant]`), and
//! a call that needs one is refused as IAM refuses it, naming the principal, the action and the resource.

use super::AwsError;
use crate::world::{AccountData, Caller};

/// The role an assumed-role session acts as (`arn:aws:sts::<account>:assumed-role/<role>/<session>`).
fn role_of(caller: &Caller) -> Option<&str> {
    caller
        .arn
        .split_once(":assumed-role/")
        .and_then(|(_, rest)| rest.split('/').next())
}

/// Refuses a member session's call in a region the account cannot use: an opt-in region it has not enabled
/// (AWS does not know the session there) or one a service control policy denies.
pub fn require_region(
    account: &AccountData,
    caller: &Caller,
    action: &str,
    region: &str,
) -> Result<(), AwsError> {
    if role_of(caller).is_none() {
        return Ok(());
    }
    if account.disabled_regions.iter().any(|r| r == region) {
        return Err(AwsError::new(
            400,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    }
    if account.scp_denied_regions.iter().any(|r| r == region) {
        return Err(AwsError::new(
            400,
            "AccessDeniedException",
            format!(
                "User: {} is not authorized to perform: {action} with an explicit deny in a service control \
                 policy",
                caller.arn
            ),
        ));
    }
    Ok(())
}

/// Refuses `action` on `resource` if the caller's role lacks it.
pub fn require(
    account: &AccountData,
    caller: &Caller,
    action: &str,
    resource: &str,
) -> Result<(), AwsError> {
    let denied = role_of(caller)
        .and_then(|role| account.roles.get(role))
        .is_some_and(|role| role.denied_actions.iter().any(|a| a == action));
    if denied {
        return Err(AwsError::new(
            400,
            "AccessDeniedException",
            format!(
                "User: {} is not authorized to perform: {action} on resource: {resource} because no \
                 identity-based policy allows the {action} action",
                caller.arn
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet_file::RoleSpec;

    #[test]
    fn a_role_lacking_an_action_is_refused_naming_it() {
        let mut account = AccountData::default();
        account.roles.insert(
            "member".into(),
            RoleSpec {
                name: "member".into(),
                external_id: None,
                denied_actions: vec!["kms:CreateGrant".into()],
            },
        );
        let caller = Caller {
            account_id: "111111111111".into(),
            arn: "arn:aws:sts::111111111111:assumed-role/member/tablecrypt".into(),
            user_id: "AROA:tablecrypt".into(),
        };
        let error = require(
            &account,
            &caller,
            "kms:CreateGrant",
            "arn:aws:kms:eu-west-1:111111111111:key/k",
        )
        .expect_err("denied");
        assert_eq!(error.code, "AccessDeniedException");
        assert!(
            error.message.contains("assumed-role/member/tablecrypt"),
            "{}",
            error.message
        );
        assert!(
            error
                .message
                .contains("kms:CreateGrant on resource: arn:aws:kms"),
            "{}",
            error.message
        );
        assert!(require(&account, &caller, "kms:DescribeKey", "k").is_ok());
        let hub = Caller {
            arn: "arn:aws:iam::000000000000:user/hub".into(),
            ..caller
        };
        assert!(require(&account, &hub, "kms:CreateGrant", "k").is_ok());
    }
}
