//! Uploading an export folder to the Hugging Face Hub over its HTTP API (`export --push`).
//!
//! The sequence is huggingface_hub's `create_commit`: create the repo (409 = it exists), ask
//! `preupload` which files go through LFS, upload those through the LFS batch API (basic PUT or
//! the Hub's multipart variant, then `verify`), and commit everything in one ndjson request that
//! carries regular files inline (base64) and LFS files as pointers. Big files are streamed from
//! disk, never held in memory. The token only goes to the endpoint's own origin and never appears
//! in an error.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

/// Where and how to push.
#[derive(Clone)]
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

impl std::fmt::Debug for PushOptions {
    // Hand-written so a `{:?}` of the options can never print the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushOptions")
            .field("endpoint", &self.endpoint)
            .field("token", &"<redacted>")
            .field("private", &self.private)
            .field("revision", &self.revision)
            .field("commit_message", &self.commit_message)
            .finish()
    }
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

/// Files per `preupload` request (huggingface_hub chunks by the same number).
const PREUPLOAD_CHUNK: usize = 256;
/// Attempts of an idempotent request on a network error, 429 or 5xx.
const ATTEMPTS: u32 = 4;
/// First wait between attempts; doubles each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(400);

/// Checks that `repo` looks like a Hub repository id `org/name`.
pub fn check_repo_id(repo: &str) -> Result<()> {
    let ok_part = |s: &str| {
        !s.is_empty()
            && s.len() <= 96
            && !s.starts_with(['.', '-'])
            && !s.ends_with(['.', '-'])
            && !s.contains("..")
            && !s.contains("--")
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match repo.split_once('/') {
        Some((org, name)) if ok_part(org) && ok_part(name) => Ok(()),
        _ => bail!(
            "{repo:?} is not a Hugging Face repository id; expected ORG/NAME (letters, digits, \
             '-', '_', '.'), e.g. natix-miner/roadwork"
        ),
    }
}

/// One file of the folder.
struct LocalFile {
    /// Path in the repo, `/`-separated.
    path: String,
    abs: PathBuf,
    size: u64,
    lfs: bool,
    ignored: bool,
    sha256: Option<String>,
}

fn list_files(dir: &Path) -> Result<Vec<LocalFile>> {
    let mut out = Vec::new();
    let walker = walkdir::WalkDir::new(dir)
        .follow_links(true)
        .into_iter()
        .filter_entry(|e| e.file_name() != ".git");
    for e in walker {
        let e = e.with_context(|| format!("cannot list folder {}", dir.display()))?;
        if !e.file_type().is_file() {
            continue;
        }
        let abs = e.into_path();
        let meta =
            std::fs::metadata(&abs).with_context(|| format!("cannot read {}", abs.display()))?;
        let rel = abs.strip_prefix(dir).unwrap_or(&abs);
        let path = rel
            .components()
            .map(|c| c.as_os_str().to_str())
            .collect::<Option<Vec<_>>>()
            .with_context(|| format!("{} has a non UTF-8 name", abs.display()))?
            .join("/");
        out.push(LocalFile {
            path,
            abs,
            size: meta.len(),
            lfs: false,
            ignored: false,
            sha256: None,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    if out.is_empty() {
        bail!("{} has no files to push", dir.display());
    }
    Ok(out)
}

/// Percent-encodes a path segment (like Python's `quote(s, safe="")`).
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Origin (`scheme://host[:port]`) of a URL.
fn origin(url: &str) -> &str {
    let after = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[after..].find('/') {
        Some(j) => &url[..after + j],
        None => url,
    }
}

/// A URL without its query string: presigned storage URLs carry credentials there.
fn without_query(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

fn bytes_bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    if std::env::var_os("SV72_NO_PROGRESS").is_some() {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:>12} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
        )
        .expect("valid template"),
    );
    pb.set_message(what.to_string());
    pb
}

type Resp = ureq::http::Response<ureq::Body>;

/// An answer read to the end: status, selected headers, body text.
struct Answer {
    status: u16,
    etag: Option<String>,
    error_header: Option<String>,
    body: String,
}

impl Answer {
    fn read(mut resp: Resp) -> Self {
        let h = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.to_string())
        };
        let etag = h("etag");
        let error_header = h("x-error-message");
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        Answer {
            status,
            etag,
            error_header,
            body,
        }
    }

    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    fn json(&self, what: &str) -> Result<Value> {
        serde_json::from_str(&self.body)
            .with_context(|| format!("{what}: the Hub's answer is not JSON"))
    }

    /// The Hub's own error text: `X-Error-Message`, else the JSON `error`, else the body.
    fn message(&self) -> String {
        if let Some(m) = &self.error_header {
            return m.clone();
        }
        if let Ok(v) = serde_json::from_str::<Value>(&self.body) {
            match v.get("error").or_else(|| v.get("message")) {
                Some(Value::String(s)) => return s.clone(),
                Some(Value::Array(a)) => {
                    return a
                        .iter()
                        .map(|x| x.as_str().map(String::from).unwrap_or(x.to_string()))
                        .collect::<Vec<_>>()
                        .join("; ")
                }
                _ => {}
            }
        }
        self.body.chars().take(300).collect()
    }
}

fn retryable(status: u16) -> bool {
    status == 429 || (500..600).contains(&status)
}

struct Hub<'a> {
    agent: ureq::Agent,
    endpoint: String,
    opts: &'a PushOptions,
}

impl<'a> Hub<'a> {
    fn new(opts: &'a PushOptions) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(600)))
            .build()
            .into();
        Hub {
            agent,
            endpoint: opts.endpoint.trim_end_matches('/').to_string(),
            opts,
        }
    }

    /// Removes the token from any text that may reach the user.
    fn redact(&self, s: &str) -> String {
        if self.opts.token.is_empty() {
            s.to_string()
        } else {
            s.replace(&self.opts.token, "<redacted>")
        }
    }

    fn auth(&self, url: &str) -> Option<String> {
        (origin(url) == origin(&self.endpoint) && !self.opts.token.is_empty())
            .then(|| format!("Bearer {}", self.opts.token))
    }

    fn status_error(&self, what: &str, a: &Answer) -> anyhow::Error {
        let msg = self.redact(&a.message());
        let hint = match a.status {
            401 | 403 => " (check that HF_TOKEN is a write token with access to this repository)",
            _ => "",
        };
        anyhow::anyhow!("{what}: the Hub answered HTTP {}{hint}: {msg}", a.status)
    }

    /// Sends a request built by `send` up to [`ATTEMPTS`] times while the failure is transient.
    fn retry(&self, what: &str, mut send: impl FnMut() -> Result<Answer>) -> Result<Answer> {
        let mut wait = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let res = send();
            let transient = match &res {
                Ok(a) => retryable(a.status),
                Err(_) => true,
            };
            if !transient || attempt >= ATTEMPTS {
                return match res {
                    Ok(a) => Ok(a),
                    Err(e) => Err(anyhow::anyhow!(
                        "{what} failed after {attempt} attempt(s): {}",
                        self.redact(&format!("{e:#}"))
                    )),
                };
            }
            std::thread::sleep(wait);
            wait *= 2;
            attempt += 1;
        }
    }

    /// POSTs JSON (an idempotent request: retried) and returns the answer, failing on non-2xx
    /// unless `accept` lists the status. The token goes along only when `with_token` and the URL
    /// is on the endpoint's origin.
    fn post_json(
        &self,
        what: &str,
        url: &str,
        body: &Value,
        content_type: &str,
        with_token: bool,
        accept: &[u16],
    ) -> Result<Answer> {
        let bytes = serde_json::to_vec(body)?;
        let send = || -> Result<Answer> {
            let mut req = self
                .agent
                .post(url)
                .header("Content-Type", content_type)
                .header("Accept", accept_for(content_type));
            if let Some(a) = self.auth(url).filter(|_| with_token) {
                req = req.header("Authorization", &a);
            }
            let resp = req.send(&bytes[..]).map_err(|e| anyhow::anyhow!("{}", e))?;
            Ok(Answer::read(resp))
        };
        let a = self.retry(what, send)?;
        if !a.ok() && !accept.contains(&a.status) {
            return Err(self.status_error(what, &a));
        }
        Ok(a)
    }

    /// PUTs the `(file, offset, len)` slice to `url` (streamed, with the given headers),
    /// retrying transient failures.
    fn put_file(
        &self,
        what: &str,
        url: &str,
        (file, offset, len): (&Path, u64, u64),
        headers: &[(String, String)],
        bar: &ProgressBar,
    ) -> Result<Answer> {
        let start = bar.position();
        let a = self.retry(what, || {
            bar.set_position(start);
            let mut f =
                File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
            f.seek(SeekFrom::Start(offset))?;
            let mut reader = bar.wrap_read(f.take(len));
            let mut req = self
                .agent
                .put(url)
                .header("Content-Length", &len.to_string());
            // Storage URLs are presigned: like huggingface_hub, never send them the token.
            for (k, v) in headers {
                req = req.header(k.as_str(), v.as_str());
            }
            let resp = req
                .send(ureq::SendBody::from_reader(&mut reader))
                .map_err(|e| anyhow::anyhow!("{} (PUT {})", e, without_query(url)))?;
            Ok(Answer::read(resp))
        })?;
        if !a.ok() {
            return Err(self.status_error(what, &a));
        }
        Ok(a)
    }
}

fn accept_for(content_type: &str) -> &str {
    if content_type.contains("git-lfs") {
        content_type
    } else {
        "application/json"
    }
}

const LFS_JSON: &str = "application/vnd.git-lfs+json";

fn sha256_file(path: &Path, bar: &ProgressBar) -> Result<String> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    crate::util::hash::sha256_reader(
        bar.wrap_read(std::io::BufReader::with_capacity(1 << 20, f)),
        path,
    )
}

fn sample_b64(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut buf = Vec::with_capacity(512);
    (&mut f)
        .take(512)
        .read_to_end(&mut buf)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(buf))
}

/// The `href` and string headers of an LFS action.
fn action(v: &Value, what: &str) -> Result<(String, BTreeMap<String, String>)> {
    let href = v
        .get("href")
        .and_then(|h| h.as_str())
        .with_context(|| format!("{what}: the LFS batch answer has an action without href"))?
        .to_string();
    let mut headers = BTreeMap::new();
    if let Some(Value::Object(m)) = v.get("header") {
        for (k, val) in m {
            let s = match val {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            headers.insert(k.clone(), s);
        }
    }
    Ok((href, headers))
}

/// Uploads every file of `dir` to model repository `repo` (`org/name`) in one commit.
pub fn push_folder(dir: &Path, repo: &str, opts: &PushOptions) -> Result<PushReport> {
    check_repo_id(repo)?;
    if opts.token.trim().is_empty() {
        bail!("pushing needs a Hugging Face write token: set HF_TOKEN");
    }
    let mut files = list_files(dir)?;
    let hub = Hub::new(opts);
    let ep = hub.endpoint.clone();
    let revision = quote(&opts.revision);
    let (org, name) = repo.split_once('/').unwrap_or(("", repo));

    // 1. The repository (409: it already exists).
    hub.post_json(
        &format!("creating {repo}"),
        &format!("{ep}/api/repos/create"),
        &json!({"type": "model", "name": name, "organization": org, "private": opts.private}),
        "application/json",
        true,
        &[409],
    )?;

    // 2. Which files go through LFS.
    for chunk in files.chunks_mut(PREUPLOAD_CHUNK) {
        let mut payload = Vec::with_capacity(chunk.len());
        for f in chunk.iter() {
            payload.push(json!({"path": f.path, "sample": sample_b64(&f.abs)?, "size": f.size}));
        }
        let what = format!("preupload of {} file(s) to {repo}", chunk.len());
        let a = hub.post_json(
            &what,
            &format!("{ep}/api/models/{repo}/preupload/{revision}"),
            &json!({ "files": payload }),
            "application/json",
            true,
            &[],
        )?;
        let v = a.json(&what)?;
        let answered = v
            .get("files")
            .and_then(|f| f.as_array())
            .with_context(|| format!("{what}: the answer has no `files` list"))?;
        for f in chunk.iter_mut() {
            let info = answered
                .iter()
                .find(|x| x.get("path").and_then(|p| p.as_str()) == Some(f.path.as_str()))
                .with_context(|| format!("{what}: the answer does not mention {}", f.path))?;
            let mode = info.get("uploadMode").and_then(|m| m.as_str());
            f.lfs = match mode {
                Some("lfs") => true,
                Some("regular") => false,
                other => bail!("{what}: unknown uploadMode {other:?} for {}", f.path),
            };
            // Empty files cannot go through LFS storage; huggingface_hub commits them inline.
            if f.size == 0 {
                f.lfs = false;
            }
            f.ignored = info
                .get("shouldIgnore")
                .and_then(|b| b.as_bool())
                .unwrap_or(false);
        }
    }

    // 3. LFS objects: hash, ask the batch API, upload what the Hub lacks.
    let lfs_total: u64 = files
        .iter()
        .filter(|f| f.lfs && !f.ignored)
        .map(|f| f.size)
        .sum();
    let mut lfs_bytes = 0;
    if lfs_total > 0 {
        let bar = bytes_bar(lfs_total, "hashing");
        for f in files.iter_mut().filter(|f| f.lfs && !f.ignored) {
            f.sha256 = Some(sha256_file(&f.abs, &bar)?);
        }
        bar.finish_and_clear();
        // One object per distinct content.
        let mut objects: BTreeMap<String, (u64, PathBuf)> = BTreeMap::new();
        for f in files.iter().filter(|f| f.lfs && !f.ignored) {
            if let Some(oid) = &f.sha256 {
                objects
                    .entry(oid.clone())
                    .or_insert((f.size, f.abs.clone()));
            }
        }
        let what = format!("LFS batch request for {repo}");
        let req = json!({
            "operation": "upload",
            "transfers": ["basic", "multipart"],
            "objects": objects.iter().map(|(oid, (size, _))| json!({"oid": oid, "size": size})).collect::<Vec<_>>(),
            "hash_algo": "sha256",
            "ref": {"name": opts.revision},
        });
        let a = hub.post_json(
            &what,
            &format!("{ep}/{repo}.git/info/lfs/objects/batch"),
            &req,
            LFS_JSON,
            true,
            &[],
        )?;
        let v = a.json(&what)?;
        let answered = v
            .get("objects")
            .and_then(|o| o.as_array())
            .with_context(|| format!("{what}: the answer has no `objects` list"))?;
        let to_send: u64 = answered
            .iter()
            .filter(|o| o.get("actions").is_some_and(|a| a.get("upload").is_some()))
            .filter_map(|o| o.get("size").and_then(|s| s.as_u64()))
            .sum();
        let bar = bytes_bar(to_send, "uploading");
        for obj in answered {
            let oid = obj
                .get("oid")
                .and_then(|o| o.as_str())
                .with_context(|| format!("{what}: an object without oid"))?;
            let Some((size, path)) = objects.get(oid) else {
                bail!("{what}: the Hub answered for an object that was not asked for ({oid})");
            };
            if let Some(err) = obj.get("error") {
                let msg = err.get("message").and_then(|m| m.as_str()).unwrap_or("");
                bail!(
                    "{what}: the Hub refused {} ({}): {}",
                    path.display(),
                    err.get("code").map(|c| c.to_string()).unwrap_or_default(),
                    hub.redact(msg)
                );
            }
            let Some(actions) = obj.get("actions") else {
                continue; // already stored on the Hub
            };
            let Some(upload) = actions.get("upload") else {
                continue;
            };
            let file_what = format!("uploading {} to {repo}", path.display());
            let (href, header) = action(upload, &what)?;
            if let Some(chunk) = header.get("chunk_size") {
                let chunk: u64 = chunk.parse().ok().filter(|c| *c > 0).with_context(|| {
                    format!("{what}: chunk_size {chunk:?} is not a positive integer")
                })?;
                let mut parts: Vec<(u64, &String)> = header
                    .iter()
                    .filter_map(|(k, v)| k.parse::<u64>().ok().map(|n| (n, v)))
                    .collect();
                parts.sort();
                if parts.len() as u64 != size.div_ceil(chunk) {
                    bail!(
                        "{what}: {} part URLs for {} bytes in chunks of {chunk}",
                        parts.len(),
                        size
                    );
                }
                let mut etags = Vec::with_capacity(parts.len());
                for (i, (n, url)) in parts.iter().enumerate() {
                    let off = i as u64 * chunk;
                    let len = chunk.min(size - off);
                    let a = hub.put_file(&file_what, url, (path, off, len), &[], &bar)?;
                    let etag = a.etag.filter(|e| !e.is_empty()).with_context(|| {
                        format!("{file_what}: part {n} answered without an ETag")
                    })?;
                    etags.push(json!({"partNumber": i + 1, "etag": etag}));
                }
                hub.post_json(
                    &format!("completing the upload of {}", path.display()),
                    &href,
                    &json!({"oid": oid, "parts": etags}),
                    LFS_JSON,
                    false,
                    &[],
                )?;
            } else {
                let headers: Vec<(String, String)> = header.into_iter().collect();
                hub.put_file(&file_what, &href, (path, 0, *size), &headers, &bar)?;
            }
            lfs_bytes += size;
            if let Some(verify) = actions.get("verify") {
                let (vhref, _) = action(verify, &what)?;
                hub.post_json(
                    &format!("verifying the upload of {}", path.display()),
                    &vhref,
                    &json!({"oid": oid, "size": size}),
                    LFS_JSON,
                    true,
                    &[],
                )?;
            }
        }
        bar.finish_and_clear();
    }

    // 4. One commit.
    let mut body = Vec::new();
    let mut line = |v: Value| -> Result<()> {
        serde_json::to_writer(&mut body, &v)?;
        body.push(b'\n');
        Ok(())
    };
    line(json!({"key": "header", "value": {"summary": opts.commit_message, "description": ""}}))?;
    let mut committed = Vec::new();
    for f in files.iter().filter(|f| !f.ignored) {
        if f.lfs {
            line(json!({"key": "lfsFile", "value": {
                "path": f.path, "algo": "sha256", "oid": f.sha256, "size": f.size}}))?;
        } else {
            let bytes = std::fs::read(&f.abs)
                .with_context(|| format!("cannot read {}", f.abs.display()))?;
            let content = base64::engine::general_purpose::STANDARD.encode(bytes);
            line(json!({"key": "file", "value": {
                "content": content, "path": f.path, "encoding": "base64"}}))?;
        }
        committed.push(f.path.clone());
    }
    let what = format!("commit to {repo}@{}", opts.revision);
    let url = format!("{ep}/api/models/{repo}/commit/{revision}");
    let mut req = hub
        .agent
        .post(&url)
        .header("Content-Type", "application/x-ndjson")
        .header("Accept", "application/json");
    if let Some(a) = hub.auth(&url) {
        req = req.header("Authorization", &a);
    }
    // Not retried: a commit that reached the Hub but whose answer was lost must not be doubled.
    let resp = req
        .send(&body[..])
        .map_err(|e| anyhow::anyhow!("{what} failed: {}", hub.redact(&e.to_string())))?;
    let a = Answer::read(resp);
    if !a.ok() {
        return Err(hub.status_error(&what, &a));
    }
    let v = a.json(&what).unwrap_or(Value::Null);
    let commit = v
        .get("commitOid")
        .and_then(|c| c.as_str())
        .map(String::from);
    Ok(PushReport {
        url: format!("{ep}/{repo}"),
        commit,
        files: committed,
        lfs_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        assert!(check_repo_id("natix-miner/roadwork_v1.2").is_ok());
        for bad in [
            "roadwork", "a/b/c", "/x", "x/", "a b/c", "org/..x", "org/-x", "",
        ] {
            assert!(check_repo_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quote_and_origin() {
        assert_eq!(quote("refs/pr/1"), "refs%2Fpr%2F1");
        assert_eq!(quote("main"), "main");
        assert_eq!(origin("http://127.0.0.1:9/a/b?x"), "http://127.0.0.1:9");
        assert_eq!(
            without_query("https://s3/x?X-Amz-Signature=s"),
            "https://s3/x"
        );
    }

    #[test]
    fn debug_hides_token() {
        let o = PushOptions {
            endpoint: "e".into(),
            token: "hf_secret".into(),
            private: false,
            revision: "main".into(),
            commit_message: "m".into(),
        };
        assert!(!format!("{o:?}").contains("hf_secret"));
    }
}
