//! Uploading an export folder to the Hugging Face Hub over its HTTP API (`export --push`).

use std::path::Path;

use anyhow::{bail, Result};

/// Where and how to push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Hub endpoint (`export.hf_endpoint`), e.g. `https://huggingface.co`.
    pub endpoint: String,
    /// Write token (HF_TOKEN); never printed.
    pub token: String,
    /// Create the repository private when it does not exist.
    pub private: bool,
    /// Branch to commit to.
    pub revision: String,
    /// Commit title.
    pub commit_message: String,
}

/// What a push did.
#[derive(Debug, Clone, PartialEq)]
pub struct PushReport {
    /// `https://…/ORG/REPO`.
    pub url: String,
    /// Commit id the Hub answered, when it did.
    pub commit: Option<String>,
    /// Files committed (relative paths).
    pub files: Vec<String>,
    /// Bytes sent through LFS uploads.
    pub lfs_bytes: u64,
}

/// Uploads every file of `dir` to model repository `repo` (`org/name`) in one commit.
pub fn push_folder(dir: &Path, repo: &str, opts: &PushOptions) -> Result<PushReport> {
    let _ = (dir, opts);
    bail!("pushing {repo} to the Hub is not built yet")
}
