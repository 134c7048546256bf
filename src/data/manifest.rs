//! The manifest: one row per image, the artifact every stage after `ingest` reads.
//!
//! Stored as `datasets/<name>/manifest.parquet`. `path` is absolute, or relative to the datasets
//! root (`paths.datasets`) for images kept in the content-addressed store.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where an image came from: a real photo or a generated one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Real,
    Synthetic,
}

/// Deterministic data split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
    Test,
}

/// One image in a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestRow {
    /// blake3 hex of the original encoded bytes (content id).
    pub id: String,
    /// Absolute path, or relative to the datasets root for the content-addressed store.
    pub path: String,
    /// 1 = roadwork, 0 = none.
    pub label: u8,
    pub source: SourceKind,
    /// Generator name, e.g. `natix`, `sdxl-t2i`, `cosmos`; real photos name their collection.
    pub generator: String,
    pub width: u32,
    pub height: u32,
    /// Encoded format, e.g. `jpeg`, `png`.
    pub format: String,
    pub split: Split,
    /// 64-bit perceptual hash (DCT pHash) of the oriented image.
    pub phash: u64,
    /// Near-duplicate group id; a group never straddles splits.
    pub group: String,
    /// RFC 3339 time of first ingest.
    pub ingested_at: String,
    /// Where the image was found (file path, or `file.parquet#row`).
    pub origin: String,
    /// For a materialised augmented variant: the id of the original image.
    pub variant_of: Option<String>,
    /// For a materialised augmented variant: the augmentation that produced it.
    pub aug: Option<String>,
}

impl ManifestRow {
    /// The image file on disk.
    pub fn resolve_path(&self, datasets_root: &Path) -> PathBuf {
        let p = Path::new(&self.path);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            datasets_root.join(p)
        }
    }
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Real => "real",
            SourceKind::Synthetic => "synthetic",
        }
    }
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SourceKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "real" => Ok(SourceKind::Real),
            "synthetic" | "synth" | "fake" => Ok(SourceKind::Synthetic),
            other => anyhow::bail!("unknown source kind {other:?}: use `real` or `synthetic`"),
        }
    }
}

impl FromStr for Split {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" => Ok(Split::Train),
            "val" | "valid" | "validation" => Ok(Split::Val),
            "test" => Ok(Split::Test),
            other => anyhow::bail!("unknown split {other:?}: use `train`, `val` or `test`"),
        }
    }
}
