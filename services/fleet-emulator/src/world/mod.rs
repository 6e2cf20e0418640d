//! The emulated fleet: accounts, their roles, regions, keys and tables, and the STS sessions that act in them.

pub mod keys;
pub mod load;
pub mod tables;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use chrono::{DateTime, Utc};

use crate::aws::AwsError;
use crate::clock::Clock;
use crate::fleet_file::{FleetSpec, HubSpec, RoleSpec, Settings};
pub use keys::{Key, KeyManager, KeyState};
pub use tables::{Sse, Table};

/// Who is calling, as established from the access key.
#[derive(Debug, Clone)]
pub struct Caller {
    pub account_id: String,
    /// The principal's ARN (an IAM user for the hub, an assumed-role session otherwise).
    pub arn: String,
    pub user_id: String,
}

/// Temporary credentials issued by AssumeRole.
#[derive(Debug, Clone)]
pub struct Session {
    pub account_id: String,
    pub arn: String,
    pub user_id: String,
    pub expires: DateTime<Utc>,
}

/// One account-region's KMS keys, aliases and DynamoDB tables.
#[derive(Debug, Default)]
pub struct RegionData {
    pub keys: BTreeMap<String, Key>,
    /// Alias name ("alias/x") -> (key id, creation time).
    pub aliases: BTreeMap<String, (String, DateTime<Utc>)>,
    pub tables: BTreeMap<String, Table>,
    /// Tables with an update in flight, by completion time, so settling and the in-flight count are cheap.
    pub due: BTreeSet<(DateTime<Utc>, String)>,
}

/// One member account.
#[derive(Debug, Default)]
pub struct AccountData {
    pub account_id: String,
    pub roles: HashMap<String, RoleSpec>,
    pub regions: BTreeMap<String, RegionData>,
    /// Opt-in regions not enabled, and regions an SCP denies (the fleet file's).
    pub disabled_regions: Vec<String>,
    pub scp_denied_regions: Vec<String>,
}

impl AccountData {
    pub fn region(&mut self, region: &str) -> &mut RegionData {
        self.regions.entry(region.to_owned()).or_default()
    }
}

/// The partition a region belongs to, for ARNs.
pub fn partition_of(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// Everything the emulator knows. Each account sits behind its own lock, so accounts never contend.
#[derive(Debug, Default)]
pub struct World {
    pub clock: Clock,
    settings: RwLock<Settings>,
    hub: RwLock<HubSpec>,
    accounts: RwLock<HashMap<String, Arc<Mutex<AccountData>>>>,
    sessions: RwLock<HashMap<String, Session>>,
    organization: RwLock<Option<crate::fleet_file::OrganizationSpec>>,
}

/// Locks ignoring poisoning: a panicking request must not take the whole emulator down.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl World {
    /// Replaces the fleet (accounts, keys, tables) with `spec`. Issued sessions stay valid, as temporary
    /// credentials do in AWS while the resources around them change.
    pub fn load(&self, spec: &FleetSpec) -> anyhow::Result<()> {
        let now = self.clock.now();
        let accounts = load::build_accounts(spec, now)?;
        let mut settings = spec.settings.clone();
        if let Some(behaviour) = &spec.behaviour {
            settings.behaviour = behaviour.clone();
        }
        *write(&self.settings) = settings;
        *write(&self.hub) = spec.hub.clone();
        *write(&self.organization) = spec.organization.clone();
        *write(&self.accounts) = accounts
            .into_iter()
            .map(|a| (a.account_id.clone(), Arc::new(Mutex::new(a))))
            .collect();
        Ok(())
    }

    pub fn settings(&self) -> Settings {
        read(&self.settings).clone()
    }

    pub fn set_settings(&self, settings: Settings) {
        *write(&self.settings) = settings;
    }

    /// The organization of the fleet file, if it has one.
    pub fn organization(&self) -> Option<crate::fleet_file::OrganizationSpec> {
        read(&self.organization).clone()
    }

    pub fn hub(&self) -> HubSpec {
        read(&self.hub).clone()
    }

    /// The caller behind an access key: the hub's long-term key, or a live session.
    pub fn authenticate(&self, access_key_id: &str) -> Result<Caller, AwsError> {
        let hub = self.hub();
        if access_key_id == hub.access_key_id {
            return Ok(Caller {
                arn: format!("arn:aws:iam::{}:{}", hub.account_id, hub.principal),
                user_id: "AIDAHUBEXAMPLE".to_owned(),
                account_id: hub.account_id,
            });
        }
        let sessions = read(&self.sessions);
        let Some(session) = sessions.get(access_key_id) else {
            return Err(AwsError::new(
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            ));
        };
        if session.expires <= self.clock.now() {
            return Err(AwsError::new(
                403,
                "ExpiredTokenException",
                "The security token included in the request is expired",
            ));
        }
        Ok(Caller {
            account_id: session.account_id.clone(),
            arn: session.arn.clone(),
            user_id: session.user_id.clone(),
        })
    }

    pub fn add_session(&self, access_key_id: String, session: Session) {
        let now = self.clock.now();
        let mut sessions = write(&self.sessions);
        // Forget long-expired sessions now and then so a long benchmark does not grow without bound.
        if sessions.len() > 100_000 {
            sessions.retain(|_, s| s.expires > now);
        }
        sessions.insert(access_key_id, session);
    }

    /// The account's state; the hub (or any account a session names) exists even if the fleet omits it.
    pub fn account(&self, account_id: &str) -> Arc<Mutex<AccountData>> {
        if let Some(account) = read(&self.accounts).get(account_id) {
            return account.clone();
        }
        write(&self.accounts)
            .entry(account_id.to_owned())
            .or_insert_with(|| {
                Arc::new(Mutex::new(AccountData {
                    account_id: account_id.to_owned(),
                    ..Default::default()
                }))
            })
            .clone()
    }

    /// The account if the fleet declares it (for AssumeRole, which must not invent accounts).
    pub fn existing_account(&self, account_id: &str) -> Option<Arc<Mutex<AccountData>>> {
        read(&self.accounts).get(account_id).cloned()
    }

    /// Counts for the admin API.
    pub fn summary(&self) -> serde_json::Value {
        let accounts = read(&self.accounts);
        let mut tables = 0usize;
        let mut keys = 0usize;
        for account in accounts.values() {
            let account = lock(account);
            for region in account.regions.values() {
                tables += region.tables.len();
                keys += region.keys.len();
            }
        }
        serde_json::json!({
            "accounts": accounts.len(),
            "tables": tables,
            "keys": keys,
            "sessions": read(&self.sessions).len(),
            "clock": self.clock.now().to_rfc3339(),
            "clock_offset_seconds": self.clock.offset().num_milliseconds() as f64 / 1000.0,
        })
    }
}
