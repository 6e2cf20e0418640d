//! The manifest of a calibration run: written before anything is created, and before each resource is created,
//! so a run killed at any step can be cleaned up (`--cleanup MANIFEST`), and only what it created is touched.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Table,
    Key,
    Alias,
}

/// One resource the run is about to create, or created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    pub kind: Kind,
    pub region: String,
    /// The table name, the alias name, or the key's description (unique to the run).
    pub name: String,
    /// The key id, once CreateKey answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Whether the create call answered with success (false: it may or may not exist).
    pub created: bool,
    /// Whether cleanup removed it (a key: scheduled for deletion).
    #[serde(default)]
    pub removed: bool,
}

/// Everything needed to find and remove a run's resources again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub run_id: String,
    pub account_id: String,
    pub region: String,
    pub replica_region: String,
    /// The endpoint override the run used, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    pub started: DateTime<Utc>,
    pub resources: Vec<Resource>,
    /// When cleanup finished with every resource removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleaned_up: Option<DateTime<Utc>>,
}

impl Manifest {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read manifest {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("invalid manifest {}", path.display()))
    }
}

/// The manifest on disk, rewritten (to a temporary file, then renamed over it) after every change.
#[derive(Debug)]
pub struct ManifestFile {
    path: PathBuf,
    manifest: Mutex<Manifest>,
}

impl ManifestFile {
    /// Writes `manifest` to `path` first: it must exist before any resource does.
    pub fn create(path: PathBuf, manifest: Manifest) -> anyhow::Result<Self> {
        let file = Self {
            path,
            manifest: Mutex::new(manifest),
        };
        file.save(&file.lock())?;
        Ok(file)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn snapshot(&self) -> Manifest {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Manifest> {
        super::session::lock(&self.manifest)
    }

    fn save(&self, manifest: &Manifest) -> anyhow::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(manifest)?;
        std::fs::write(&tmp, text).with_context(|| format!("failed to write {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("failed to write {}", self.path.display()))
    }

    /// Records a resource about to be created; returns its index.
    pub fn intend(&self, kind: Kind, region: &str, name: &str) -> anyhow::Result<usize> {
        let mut manifest = self.lock();
        manifest.resources.push(Resource {
            kind,
            region: region.to_owned(),
            name: name.to_owned(),
            id: None,
            created: false,
            removed: false,
        });
        self.save(&manifest)?;
        Ok(manifest.resources.len() - 1)
    }

    /// Records that the resource at `index` exists (a key with its id).
    pub fn created(&self, index: usize, id: Option<String>) -> anyhow::Result<()> {
        let mut manifest = self.lock();
        if let Some(resource) = manifest.resources.get_mut(index) {
            resource.created = true;
            resource.id = id.or(resource.id.take());
        }
        self.save(&manifest)
    }

    /// Records what cleanup found or did for the resource at `index`.
    pub fn update(&self, index: usize, change: impl FnOnce(&mut Resource)) -> anyhow::Result<()> {
        let mut manifest = self.lock();
        if let Some(resource) = manifest.resources.get_mut(index) {
            change(resource);
        }
        self.save(&manifest)
    }

    pub fn mark_cleaned_up(&self) -> anyhow::Result<()> {
        let mut manifest = self.lock();
        manifest.cleaned_up = Some(Utc::now());
        self.save(&manifest)
    }
}
