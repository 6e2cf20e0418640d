//! Which inventoried tables a list, a selector or key usage means.

use crate::labels::LabelSelector;
use crate::table::EncryptionMode;
use crate::{AccountId, Region};

/// Which rows to list. Empty lists and `None` match everything.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InventoryFilter {
    pub account_ids: Vec<AccountId>,
    pub account_selector: LabelSelector,
    /// Tables whose tags (as the last scan read them) match.
    pub table_tags: LabelSelector,
    pub regions: Vec<Region>,
    pub mode: Option<EncryptionMode>,
    /// Tables whose key, or a replica's key, is one of these ARNs.
    pub key_arns: Vec<String>,
    pub name_prefix: Option<String>,
    pub inaccessible_only: bool,
    pub include_gone: bool,
}
