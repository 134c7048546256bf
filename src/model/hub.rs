//! Hugging Face Hub: find snapshots in the local HF cache and download them into it.
//!
//! Cache layout (the one `huggingface_hub` uses, so Python tools and sv72 share downloads):
//! `<cache>/models--ORG--NAME/{blobs/<etag>, refs/<revision>, snapshots/<commit>/<file>}`, where
//! `<cache>` is `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`. Snapshot
//! files are relative symlinks into `blobs/` on Unix (as `huggingface_hub` makes them) and plain
//! copies elsewhere.
//!
//! Downloads stream into `blobs/<etag>.incomplete`, resume from its length with an HTTP `Range`
//! request, are checked against `X-Linked-Size` / `Content-Length` and, for LFS files (whose
//! etag is the sha256), the sha256 of the content, and are renamed into place only when
//! complete. The token (`HF_TOKEN`) is sent as `Authorization: Bearer` to the endpoint's own
//! host only (never to a redirect target such as a CDN) and is never printed.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::model::weights::{INDEX_FILE, SINGLE_FILE};

/// The Hub endpoint used when `HF_ENDPOINT` is unset.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The HF hub cache folder: `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn hub_cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE").filter(|s| !s.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("HF_HOME").filter(|s| !s.is_empty()) {
        return PathBuf::from(p).join("hub");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache").join("huggingface").join("hub")
}

/// Checks an `ORG/NAME` (or `NAME`) model id and returns its cache folder name.
pub fn repo_folder_name(repo: &str) -> Result<String> {
    let ok_part = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let parts: Vec<&str> = repo.split('/').collect();
    if parts.len() > 2 || !parts.iter().all(|p| ok_part(p)) {
        bail!("{repo:?} is not a Hugging Face model id: expected ORG/NAME, e.g. facebook/dinov2-small");
    }
    Ok(format!("models--{}", parts.join("--")))
}

fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// Resolves a BACKBONE argument: a snapshot folder (holding `config.json`), or a model id found
/// in the HF cache at `revision` (a ref name such as `main`, or a commit hash).
pub fn resolve_backbone(arg: &str, revision: &str) -> Result<PathBuf> {
    let p = Path::new(arg);
    if p.is_dir() {
        if p.join("config.json").is_file() {
            return Ok(p.to_path_buf());
        }
        bail!(
            "{} is a folder but has no config.json: point at a Hugging Face snapshot folder or give a model id",
            p.display()
        );
    }
    if p.exists() {
        bail!(
            "{} is a file; BACKBONE must be a snapshot folder or a model id",
            p.display()
        );
    }
    resolve_in_cache(&hub_cache_dir(), arg, revision)
}

/// Finds `repo` at `revision` in a given HF cache folder.
pub fn resolve_in_cache(cache: &Path, repo: &str, revision: &str) -> Result<PathBuf> {
    let folder = repo_folder_name(repo).with_context(|| {
        format!("BACKBONE {repo:?} is neither an existing folder nor a model id")
    })?;
    let root = cache.join(&folder);
    let hint = format!(
        "download it with `sv72 fetch-backbone {repo}{}` (cache: {}; set HF_HUB_CACHE or HF_HOME to use another)",
        if revision == "main" { String::new() } else { format!(" --revision {revision}") },
        cache.display()
    );
    if !root.is_dir() {
        bail!(
            "model {repo} is not in the Hugging Face cache: looked for {}; {hint}",
            root.display()
        );
    }
    let ref_file = root.join("refs").join(revision);
    let commit = if ref_file.is_file() {
        let s = fs::read_to_string(&ref_file)
            .with_context(|| format!("cannot read {}", ref_file.display()))?;
        s.trim().to_string()
    } else if is_commit_hash(revision) {
        revision.to_string()
    } else {
        bail!(
            "model {repo} is cached but revision {revision:?} is not: no {} and it is not a commit hash; {hint}",
            ref_file.display()
        );
    };
    let snap = root.join("snapshots").join(&commit);
    if !snap.join("config.json").is_file() {
        bail!(
            "snapshot {} (model {repo}, revision {revision}) has no config.json; {hint}",
            snap.display()
        );
    }
    Ok(snap)
}

/// Where and how to download.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// e.g. `https://huggingface.co` (no trailing slash needed).
    pub endpoint: String,
    /// Bearer token; never printed.
    pub token: Option<String>,
    pub revision: String,
    pub cache_dir: PathBuf,
    /// Show progress bars.
    pub progress: bool,
}

impl FetchOptions {
    /// Endpoint from `HF_ENDPOINT`, token from `HF_TOKEN`, cache from [`hub_cache_dir`].
    pub fn from_env(revision: &str) -> Self {
        Self {
            endpoint: std::env::var("HF_ENDPOINT")
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string()),
            token: std::env::var("HF_TOKEN").ok().filter(|s| !s.is_empty()),
            revision: revision.to_string(),
            cache_dir: hub_cache_dir(),
            progress: true,
        }
    }
}

/// What [`fetch`] did.
#[derive(Debug, Clone)]
pub struct FetchReport {
    pub snapshot: PathBuf,
    pub commit: String,
    /// `(file, bytes, downloaded)`; `downloaded = false` when the blob was already cached.
    pub files: Vec<(String, u64, bool)>,
}

struct Client {
    agent: ureq::Agent,
    endpoint: String,
    token: Option<String>,
}

/// Origin (`scheme://host[:port]`) of a URL, for deciding where the token may go.
fn origin(url: &str) -> &str {
    let after = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[after..].find('/') {
        Some(j) => &url[..after + j],
        None => url,
    }
}

fn header(resp: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
}

impl Client {
    fn new(endpoint: &str, token: Option<String>) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .build()
            .into();
        Self {
            agent,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token,
        }
    }

    /// GET with manual redirects so the first response's `X-Linked-*` headers are kept and the
    /// token never leaves the endpoint's origin. Returns the final response and the headers of
    /// the first one.
    fn get(
        &self,
        url: &str,
        range_from: u64,
    ) -> Result<(
        ureq::http::Response<ureq::Body>,
        Option<String>,
        Option<u64>,
    )> {
        let mut url = url.to_string();
        let mut linked_etag = None;
        let mut linked_size = None;
        for _hop in 0..6 {
            let mut req = self.agent.get(&url);
            if let Some(t) = &self.token {
                if origin(&url) == origin(&self.endpoint) {
                    req = req.header("Authorization", &format!("Bearer {t}"));
                }
            }
            if range_from > 0 {
                req = req.header("Range", &format!("bytes={range_from}-"));
            }
            let resp = req
                .call()
                .with_context(|| format!("request to {url} failed (network or TLS error)"))?;
            if linked_etag.is_none() {
                linked_etag = header(&resp, "x-linked-etag");
            }
            if linked_size.is_none() {
                linked_size = header(&resp, "x-linked-size").and_then(|s| s.parse().ok());
            }
            let status = resp.status().as_u16();
            if (300..400).contains(&status) {
                let loc = header(&resp, "location")
                    .with_context(|| format!("{url} answered {status} without a Location"))?;
                url = if loc.starts_with("http://") || loc.starts_with("https://") {
                    loc
                } else if loc.starts_with('/') {
                    format!("{}{loc}", origin(&url))
                } else {
                    bail!("{url} redirected to an unsupported location {loc:?}");
                };
                continue;
            }
            return Ok((resp, linked_etag, linked_size));
        }
        bail!("too many redirects starting from {url}")
    }
}

fn status_error(status: u16, what: &str, repo: &str, has_token: bool) -> anyhow::Error {
    match status {
        401 | 403 => anyhow::anyhow!(
            "{what}: the Hub answered {status} (not authorised). {} ",
            if has_token {
                format!("HF_TOKEN is set but has no access to {repo}; check the token's permissions and that you accepted the model's licence on its Hub page")
            } else {
                format!("{repo} may be gated or private: set HF_TOKEN to a token with read access (and accept the model's licence on its Hub page)")
            }
        ),
        404 => anyhow::anyhow!(
            "{what}: the Hub answered 404 (not found). Check the model id {repo:?} and the revision, or HF_ENDPOINT"
        ),
        s => anyhow::anyhow!("{what}: the Hub answered HTTP {s}"),
    }
}

/// Which files of a repo sv72 needs: configs plus safetensors weights (single or sharded);
/// other weight formats are skipped.
fn wanted_files(siblings: &[String]) -> Result<Vec<String>> {
    let has = |f: &str| siblings.iter().any(|s| s == f);
    if !has("config.json") {
        bail!("the repo has no config.json; is it a transformers model?");
    }
    let mut files = vec!["config.json".to_string()];
    if has("preprocessor_config.json") {
        files.push("preprocessor_config.json".to_string());
    }
    if has(SINGLE_FILE) {
        files.push(SINGLE_FILE.to_string());
    } else if has(INDEX_FILE) {
        files.push(INDEX_FILE.to_string());
    } else {
        bail!(
            "the repo has no {SINGLE_FILE} or {INDEX_FILE} (only other weight formats, which sv72 does not read)"
        );
    }
    Ok(files)
}

/// Downloads the snapshot of `repo` sv72 needs into the HF cache layout and returns its folder.
pub fn fetch(repo: &str, opts: &FetchOptions) -> Result<FetchReport> {
    let folder = repo_folder_name(repo)?;
    let client = Client::new(&opts.endpoint, opts.token.clone());
    let api = format!(
        "{}/api/models/{repo}/revision/{}",
        client.endpoint, opts.revision
    );
    let what = format!("model info for {repo} at revision {}", opts.revision);
    let (mut resp, _, _) = client.get(&api, 0)?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(status_error(status, &what, repo, opts.token.is_some()));
    }
    let text = resp
        .body_mut()
        .read_to_string()
        .with_context(|| format!("{what}: cannot read the answer"))?;
    let info: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{what}: the answer is not JSON"))?;
    let commit = info
        .get("sha")
        .and_then(|v| v.as_str())
        .filter(|s| is_commit_hash(s))
        .with_context(|| format!("{what}: the answer has no 40-hex `sha`"))?
        .to_string();
    let siblings: Vec<String> = info
        .get("siblings")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| {
                    s.get("rfilename")
                        .and_then(|f| f.as_str())
                        .map(String::from)
                })
                .collect()
        })
        .unwrap_or_default();
    let mut files = wanted_files(&siblings).with_context(|| format!("{repo} at {commit}"))?;

    let root = opts.cache_dir.join(&folder);
    let snap = root.join("snapshots").join(&commit);
    let mut report = FetchReport {
        snapshot: snap.clone(),
        commit: commit.clone(),
        files: Vec::new(),
    };
    let mut i = 0;
    while i < files.len() {
        let file = files[i].clone();
        let (size, downloaded) = fetch_file(&client, repo, &commit, &file, &root, opts)?;
        report.files.push((file.clone(), size, downloaded));
        if file == INDEX_FILE {
            for shard in shards_of(&snap.join(INDEX_FILE))? {
                if !files.contains(&shard) {
                    files.push(shard);
                }
            }
        }
        i += 1;
    }
    if opts.revision != commit {
        let ref_path = root.join("refs").join(&opts.revision);
        crate::util::fsx::write_atomic(&ref_path, commit.as_bytes())?;
    }
    Ok(report)
}

fn shards_of(index: &Path) -> Result<Vec<String>> {
    let text =
        fs::read_to_string(index).with_context(|| format!("cannot read {}", index.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", index.display()))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .with_context(|| format!("{} has no `weight_map`", index.display()))?;
    let mut out: Vec<String> = map
        .values()
        .filter_map(|f| f.as_str().map(String::from))
        .collect();
    out.sort();
    out.dedup();
    for f in &out {
        if f.contains("..") || f.starts_with('/') || !f.ends_with(".safetensors") {
            bail!("{} lists an unexpected shard name {f:?}", index.display());
        }
    }
    Ok(out)
}

/// Where an unfinished download of `file` at `commit` lives inside a repo's cache folder
/// (`models--ORG--NAME`). Keyed by commit and file, not by the server's answer, so a re-run
/// finds it before asking.
pub fn partial_download_path(repo_dir: &Path, commit: &str, file: &str) -> PathBuf {
    let key = crate::util::hash::content_hash(format!("{commit}/{file}").as_bytes());
    repo_dir
        .join("blobs")
        .join(format!("{}.incomplete", &key[..32]))
}

/// Downloads one file into `blobs/` (resuming a partial one) and links it into the snapshot.
fn fetch_file(
    client: &Client,
    repo: &str,
    commit: &str,
    file: &str,
    root: &Path,
    opts: &FetchOptions,
) -> Result<(u64, bool)> {
    let snap_file = root.join("snapshots").join(commit).join(file);
    if snap_file.is_file() {
        let len = fs::metadata(&snap_file)?.len();
        return Ok((len, false));
    }
    let blobs = root.join("blobs");
    fs::create_dir_all(&blobs)
        .with_context(|| format!("cannot create folder {}", blobs.display()))?;
    let url = format!("{}/{repo}/resolve/{commit}/{file}", client.endpoint);
    let what = format!("download of {file} from {repo}");
    let partial = partial_download_path(root, commit, file);
    let mut have = fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    let (mut resp, linked_etag, linked_size) = client.get(&url, have)?;
    let status = resp.status().as_u16();
    if status == 416 {
        // Our partial file is already complete or longer than the file: start over.
        fs::remove_file(&partial)
            .with_context(|| format!("cannot remove {}", partial.display()))?;
        return fetch_file(client, repo, commit, file, root, opts);
    }
    if status != 200 && status != 206 {
        return Err(status_error(status, &what, repo, opts.token.is_some()));
    }
    let etag = linked_etag
        .or_else(|| header(&resp, "etag"))
        .map(|e| e.trim_start_matches("W/").trim_matches('"').to_string())
        .filter(|e| !e.is_empty() && e.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    let resumed = status == 206 && have > 0;
    if !resumed {
        have = 0;
    }
    let content_len: Option<u64> = header(&resp, "content-length").and_then(|s| s.parse().ok());
    let total = linked_size.or(content_len.map(|c| c + have));
    let mut out = OpenOptions::new()
        .create(true)
        .write(true)
        .append(resumed)
        .truncate(!resumed)
        .open(&partial)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    let bar = crate::util::progress::bar(total.unwrap_or(0), file);
    if !opts.progress {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_position(have);
    let mut reader = resp.body_mut().with_config().limit(u64::MAX).reader();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader
            .read(&mut buf)
            .with_context(|| format!("{what}: connection broke (run again to resume)"))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])
            .with_context(|| format!("cannot write {}", partial.display()))?;
        bar.inc(n as u64);
    }
    out.sync_all()?;
    drop(out);
    bar.finish_and_clear();
    let len = fs::metadata(&partial)?.len();
    if let Some(t) = total {
        if len != t {
            bail!("{what}: got {len} bytes, expected {t} (run again to resume)");
        }
    }
    let sha = crate::util::hash::sha256_file(&partial)?;
    if let Some(e) = &etag {
        if e.len() == 64
            && e.chars().all(|c| c.is_ascii_hexdigit())
            && !e.eq_ignore_ascii_case(&sha)
        {
            let _ = fs::remove_file(&partial);
            bail!("{what}: sha256 {sha} does not match the Hub's {e}; the corrupt download was removed, run again");
        }
    }
    let blob_name = etag.unwrap_or(sha);
    let blob = blobs.join(&blob_name);
    fs::rename(&partial, &blob)
        .with_context(|| format!("cannot move the download to {}", blob.display()))?;
    link_into_snapshot(&blob, &snap_file, &blob_name)?;
    Ok((len, true))
}

fn link_into_snapshot(blob: &Path, snap_file: &Path, blob_name: &str) -> Result<()> {
    let dir = snap_file.parent().context("snapshot path has no parent")?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create folder {}", dir.display()))?;
    let _ = fs::remove_file(snap_file);
    #[cfg(unix)]
    {
        // snapshots/<commit>/<file...> → ../../blobs/<etag>, one more `..` per subfolder.
        let depth = snap_file
            .strip_prefix(blob.parent().and_then(Path::parent).unwrap_or(dir))
            .map(|p| p.components().count().saturating_sub(1))
            .unwrap_or(2);
        let mut rel = PathBuf::new();
        for _ in 0..depth {
            rel.push("..");
        }
        rel.push("blobs");
        rel.push(blob_name);
        std::os::unix::fs::symlink(&rel, snap_file)
            .with_context(|| format!("cannot link {}", snap_file.display()))?;
    }
    #[cfg(not(unix))]
    {
        let _ = blob_name;
        fs::copy(blob, snap_file)
            .with_context(|| format!("cannot copy into {}", snap_file.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_names() {
        assert_eq!(
            repo_folder_name("facebook/dinov2-small").unwrap(),
            "models--facebook--dinov2-small"
        );
        assert!(repo_folder_name("a/b/c").is_err());
        assert!(repo_folder_name("../x").is_err());
        assert_eq!(origin("https://h.co:8/a/b"), "https://h.co:8");
    }
}
