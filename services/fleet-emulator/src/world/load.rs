//! Building the emulated accounts from a fleet file.

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};

use super::keys::{Key, KeyManager, KeyState, dynamodb_key_check};
use super::tables::{Sse, Table};
use super::{AccountData, RegionData};
use crate::behaviour::KeyRefusal;
use crate::fleet_file::{AccountSpec, EncryptionSpec, FleetSpec};

pub fn build_accounts(spec: &FleetSpec, now: DateTime<Utc>) -> anyhow::Result<Vec<AccountData>> {
    let mut seen = std::collections::HashSet::new();
    spec.accounts
        .iter()
        .map(|account| {
            anyhow::ensure!(
                account.account_id.len() == 12
                    && account.account_id.bytes().all(|b| b.is_ascii_digit()),
                "account id {:?} is not 12 digits",
                account.account_id
            );
            anyhow::ensure!(
                seen.insert(account.account_id.clone()),
                "account {} is listed twice",
                account.account_id
            );
            build_account(account, now).with_context(|| format!("account {}", account.account_id))
        })
        .collect()
}

fn build_account(spec: &AccountSpec, now: DateTime<Utc>) -> anyhow::Result<AccountData> {
    let mut account = AccountData {
        account_id: spec.account_id.clone(),
        roles: spec
            .roles
            .iter()
            .map(|r| (r.name.clone(), r.clone()))
            .collect(),
        disabled_regions: spec.disabled_regions.clone(),
        scp_denied_regions: spec.scp_denied_regions.clone(),
        ..Default::default()
    };
    for region in &spec.regions {
        account.region(region);
    }
    for key_spec in &spec.keys {
        let state = KeyState::parse(&key_spec.state).with_context(|| {
            format!(
                "key state {:?}: expected Enabled, Disabled or PendingDeletion",
                key_spec.state
            )
        })?;
        let mut key = Key::new(
            &spec.account_id,
            &key_spec.region,
            key_spec.id.clone(),
            &key_spec.spec,
            KeyManager::Customer,
            key_spec.description.clone(),
            now,
        )
        .map_err(|e| anyhow::anyhow!("key in {}: {}", key_spec.region, e.message))?;
        key.set_state(state, now);
        if state == KeyState::PendingDeletion {
            key.deletion_date = Some(now + chrono::Duration::days(30));
        }
        let region = account.region(&key_spec.region);
        for alias in &key_spec.aliases {
            if !alias.starts_with("alias/") || alias.starts_with("alias/aws/") {
                bail!("alias {alias:?} must start with alias/ and not alias/aws/");
            }
            region.aliases.insert(alias.clone(), (key.id.clone(), now));
        }
        region.keys.insert(key.id.clone(), key);
    }
    for table in &spec.tables {
        let mut regions = vec![table.region.clone()];
        regions.extend(table.replicas.iter().cloned());
        for region in &regions {
            let sse = resolve(&mut account, region, &table.encryption, now)
                .with_context(|| format!("table {} in {region}", table.name))?;
            let mut t = Table::new(&table.name, &spec.account_id, region, now, sse);
            t.tags = table.tags.clone();
            t.replicas = regions.iter().filter(|r| *r != region).cloned().collect();
            let region_data = account.region(region);
            anyhow::ensure!(
                !region_data.tables.contains_key(&table.name),
                "table {} in {region} twice",
                table.name
            );
            region_data.tables.insert(table.name.clone(), t);
        }
    }
    for generate in &spec.generate {
        let regions = if generate.regions.is_empty() {
            spec.regions.clone()
        } else {
            generate.regions.clone()
        };
        anyhow::ensure!(
            !regions.is_empty(),
            "generate needs regions (on the account or the generator)"
        );
        let mix: Vec<(&EncryptionSpec, u32)> = generate.mix.iter().map(|(k, w)| (k, *w)).collect();
        let total: u32 = mix.iter().map(|(_, w)| w).sum();
        // Resolve each choice once per region.
        let mut resolved: Vec<Vec<Sse>> = Vec::new();
        for region in &regions {
            let mut per_choice = Vec::new();
            for (choice, _) in &mix {
                per_choice.push(
                    resolve(&mut account, region, choice, now)
                        .with_context(|| format!("mix {choice:?} in {region}"))?,
                );
            }
            resolved.push(per_choice);
        }
        for i in 0..generate.count {
            let region_index = i % regions.len();
            let sse = if total == 0 {
                Sse::Owned
            } else {
                // Deterministic weighted choice, so the same file always gives the same fleet.
                let mut ticket = ((i / regions.len()) as u32).wrapping_mul(2_654_435_761) % total;
                let mut chosen = 0;
                for (index, (_, weight)) in mix.iter().enumerate() {
                    if ticket < *weight {
                        chosen = index;
                        break;
                    }
                    ticket -= weight;
                }
                resolved[region_index][chosen].clone()
            };
            let name = format!("{}{:05}", generate.prefix, i);
            let region = &regions[region_index];
            let table = Table::new(&name, &spec.account_id, region, now, sse);
            account.region(region).tables.insert(name, table);
        }
    }
    Ok(account)
}

/// "owned", "managed", or a key reference resolved in `region` (it must exist and be usable).
fn resolve(
    account: &mut AccountData,
    region: &str,
    spec: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<Sse> {
    let account_id = account.account_id.clone();
    let region_data: &mut RegionData = account.region(region);
    match spec {
        "owned" => Ok(Sse::Owned),
        "managed" => Ok(Sse::Kms {
            key_arn: region_data
                .managed_key(&account_id, region, now)
                .arn
                .clone(),
            managed: true,
        }),
        reference => {
            // Tables may sit on a disabled key (to show inaccessible tables), so look it up without state checks.
            let key = region_data
                .find_key(&account_id, region, reference, now)
                .with_context(|| format!("key {reference:?} not found"))?;
            if key.state == KeyState::Enabled {
                dynamodb_key_check(
                    region_data,
                    &account_id,
                    region,
                    reference,
                    now,
                    KeyRefusal::Validation,
                )
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            }
            let key = region_data
                .find_key(&account_id, region, reference, now)
                .context("key vanished")?;
            Ok(Sse::Kms {
                key_arn: key.arn.clone(),
                managed: key.manager == KeyManager::Aws,
            })
        }
    }
}
