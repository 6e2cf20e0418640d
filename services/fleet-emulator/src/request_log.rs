//! What the emulator was asked, so tests and benchmarks can check rates and outcomes from the AWS side.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::world::lock;

/// One request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// Increasing sequence number; ask for entries `since` one to read incrementally.
    pub seq: u64,
    /// Emulator clock time (wall time plus any advance).
    pub time: DateTime<Utc>,
    pub account_id: String,
    pub region: String,
    pub service: String,
    pub operation: String,
    pub table: Option<String>,
    /// "ok", or the AWS error code returned.
    pub outcome: String,
}

/// Which entries to read.
#[derive(Debug, Default, Deserialize)]
pub struct Query {
    pub since: Option<u64>,
    pub operation: Option<String>,
    pub account_id: Option<String>,
    pub region: Option<String>,
    pub table: Option<String>,
    pub limit: Option<usize>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: VecDeque<Entry>,
    next_seq: u64,
    /// operation -> outcome -> count, over the emulator's life (or since the last clear).
    counters: BTreeMap<String, BTreeMap<String, u64>>,
}

#[derive(Debug, Default)]
pub struct RequestLog {
    inner: Mutex<Inner>,
}

/// The fields of one request to record.
pub struct Record<'a> {
    pub time: DateTime<Utc>,
    pub account_id: &'a str,
    pub region: &'a str,
    pub service: &'a str,
    pub operation: &'a str,
    pub table: Option<String>,
    pub outcome: &'a str,
}

impl RequestLog {
    pub fn record(&self, record: Record<'_>, capacity: usize) {
        let mut inner = lock(&self.inner);
        *inner
            .counters
            .entry(record.operation.to_owned())
            .or_default()
            .entry(record.outcome.to_owned())
            .or_default() += 1;
        if capacity == 0 {
            return;
        }
        inner.next_seq += 1;
        let seq = inner.next_seq;
        while inner.entries.len() >= capacity {
            inner.entries.pop_front();
        }
        inner.entries.push_back(Entry {
            seq,
            time: record.time,
            account_id: record.account_id.to_owned(),
            region: record.region.to_owned(),
            service: record.service.to_owned(),
            operation: record.operation.to_owned(),
            table: record.table,
            outcome: record.outcome.to_owned(),
        });
    }

    pub fn query(&self, query: &Query) -> Vec<Entry> {
        let inner = lock(&self.inner);
        let since = query.since.unwrap_or(0);
        let eq =
            |filter: &Option<String>, value: &str| filter.as_deref().is_none_or(|f| f == value);
        inner
            .entries
            .iter()
            .filter(|e| e.seq > since)
            .filter(|e| {
                eq(&query.operation, &e.operation)
                    && eq(&query.account_id, &e.account_id)
                    && eq(&query.region, &e.region)
            })
            .filter(|e| {
                query
                    .table
                    .as_deref()
                    .is_none_or(|t| e.table.as_deref() == Some(t))
            })
            .take(query.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }

    pub fn counters(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        lock(&self.inner).counters.clone()
    }

    pub fn clear(&self) {
        let mut inner = lock(&self.inner);
        inner.entries.clear();
        inner.counters.clear();
    }
}
