//! Who may do what: roles, grants scoped by an account label selector, and the caller an RPC runs for.
//!
//! A grant gives a role over the accounts its selector matches (an empty selector matches every account). A
//! caller may hold several grants; what they may do to an account is the union of the grants whose role allows
//! the action and whose selector matches the account's labels.

use std::fmt;

use crate::labels::{LabelSelector, Labels};
use crate::validation::InvalidValue;

/// A role, from least to most powerful; each allows a fixed set of [`Permission`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Reads: accounts, tables, key usage, scans, change requests and their items, watch, history.
    Viewer,
    /// A viewer who may also refresh the inventory and create, cancel, pause, resume and roll back change
    /// requests, and update single tables.
    Operator,
    /// A viewer who may also approve change requests, never one they created.
    Approver,
    /// Everything: accounts, the audit log, and every other role's permissions.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Self::Viewer, Self::Operator, Self::Approver, Self::Admin];

    pub fn parse(text: &str) -> Result<Self, InvalidValue> {
        match text {
            "viewer" => Ok(Self::Viewer),
            "operator" => Ok(Self::Operator),
            "approver" => Ok(Self::Approver),
            "admin" => Ok(Self::Admin),
            other => Err(InvalidValue::new(format!(
                "unknown role {other:?}: use viewer, operator, approver or admin"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Approver => "approver",
            Self::Admin => "admin",
        }
    }

    pub fn allows(self, permission: Permission) -> bool {
        match self {
            Self::Admin => true,
            Self::Viewer => permission == Permission::Read,
            Self::Operator => matches!(
                permission,
                Permission::Read | Permission::Refresh | Permission::Change
            ),
            Self::Approver => matches!(permission, Permission::Read | Permission::Approve),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an RPC needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Any read, including watching a request and listing history.
    Read,
    /// Starting an inventory scan.
    Refresh,
    /// Creating, cancelling, pausing, resuming and rolling back change requests; single-table updates.
    Change,
    /// Approving someone else's change request.
    Approve,
    /// Registering, updating and deregistering accounts.
    ManageAccounts,
    /// Reading the audit log.
    ReadAudit,
}

impl Permission {
    /// The least role that has this permission, for error messages.
    pub fn least_role(self) -> Role {
        Role::ALL
            .into_iter()
            .find(|role| role.allows(self))
            .unwrap_or(Role::Admin)
    }
}

/// One role over the accounts a selector matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub role: Role,
    /// Accounts whose labels match; empty matches every account.
    pub scope: LabelSelector,
}

/// Where a caller may exercise one permission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// No grant allows it.
    Nowhere,
    /// Some grant allows it on every account.
    Everywhere,
    /// On accounts matching any of these selectors.
    Matching(Vec<LabelSelector>),
}

impl Scope {
    pub fn allows(&self, labels: &Labels) -> bool {
        match self {
            Self::Nowhere => false,
            Self::Everywhere => true,
            Self::Matching(selectors) => selectors.iter().any(|s| s.matches(labels)),
        }
    }

    /// The selectors as a caller would read them, for error messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Nowhere => "no account".to_owned(),
            Self::Everywhere => "every account".to_owned(),
            Self::Matching(selectors) => selectors
                .iter()
                .map(|s| format!("accounts with labels {:?}", s.canonical()))
                .collect::<Vec<_>>()
                .join(" or "),
        }
    }
}

/// The authenticated caller of one RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Recorded as who created, approved or asked for something, and in the audit log.
    pub identity: String,
    /// How the identity was proven: "token", "jwt", "mtls", or "insecure" (development only).
    pub authenticated_by: &'static str,
    pub grants: Vec<Grant>,
}

impl Caller {
    /// Where this caller may exercise `permission`.
    pub fn scope(&self, permission: Permission) -> Scope {
        let mut selectors = Vec::new();
        for grant in self.grants.iter().filter(|g| g.role.allows(permission)) {
            if grant.scope.is_empty() {
                return Scope::Everywhere;
            }
            selectors.push(grant.scope.clone());
        }
        if selectors.is_empty() {
            Scope::Nowhere
        } else {
            Scope::Matching(selectors)
        }
    }

    pub fn may(&self, permission: Permission) -> bool {
        self.scope(permission) != Scope::Nowhere
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(text: &str) -> LabelSelector {
        LabelSelector::parse(text).expect("selector")
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Labels::parse(owned.iter().map(|(k, v)| (k, v))).expect("labels")
    }

    #[test]
    fn roles_allow_their_permissions_only() {
        use Permission::*;
        assert!(Role::Viewer.allows(Read) && !Role::Viewer.allows(Change));
        assert!(Role::Operator.allows(Change) && !Role::Operator.allows(Approve));
        assert!(Role::Approver.allows(Approve) && !Role::Approver.allows(Refresh));
        assert!(!Role::Operator.allows(ManageAccounts) && Role::Admin.allows(ReadAudit));
        assert_eq!(Approve.least_role(), Role::Approver);
        assert_eq!(Role::parse("operator"), Ok(Role::Operator));
        assert!(Role::parse("root").is_err());
    }

    #[test]
    fn scopes_are_the_union_of_matching_grants() {
        let caller = Caller {
            identity: "alice".into(),
            authenticated_by: "token",
            grants: vec![
                Grant {
                    role: Role::Operator,
                    scope: selector("team=payments"),
                },
                Grant {
                    role: Role::Viewer,
                    scope: selector(""),
                },
            ],
        };
        assert_eq!(caller.scope(Permission::Read), Scope::Everywhere);
        let change = caller.scope(Permission::Change);
        assert!(change.allows(&labels(&[("team", "payments")])));
        assert!(!change.allows(&labels(&[("team", "search")])));
        assert_eq!(caller.scope(Permission::Approve), Scope::Nowhere);
        assert!(!caller.may(Permission::ManageAccounts));
    }
}
