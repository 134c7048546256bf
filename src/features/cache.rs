//! On-disk feature cache, so no stage computes the same backbone feature twice.
//!
//! Layout: `<root>/<backbone key>/<variant>/seg-*.safetensors`, the variant being the preprocess
//! id, with the precision appended when it is not f32 ([`variant`]). Each segment holds the
//! rows of one `put_many` call: tensors `cls`, `pooler`, `patch_mean` `[n, D]` (f32) and, in the
//! safetensors metadata, `keys` = JSON `[[image_id, aug_id], ...]` in row order. Segments are
//! written atomically (temp file + fsync + rename), so an interrupted run leaves either a whole
//! segment or nothing; temp files (`.sv72-tmp-*`) are ignored on open. With batches of a few
//! thousand rows, 100k images × several views stay at a few hundred files. Opening reads only
//! segment headers and memory-maps the files; `get` copies one row.
//!
//! The backbone key ([`backbone_key`]) is a blake3 over `config.json` and the weight files'
//! full blake3 hashes; those are memoised in `<root>/weights-hashes.json` by (path, size, mtime)
//! so re-opening a multi-GB checkpoint costs a `stat`, not a re-read.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};
use memmap2::Mmap;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::model::weights::{INDEX_FILE, SINGLE_FILE};
use crate::util::{fsx, hash};

/// The three feature vectors of one image view.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureRow {
    pub cls: Vec<f32>,
    pub pooler: Vec<f32>,
    pub patch_mean: Vec<f32>,
}

/// Cache counters for this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: usize,
    pub segments: usize,
}

struct Segment {
    path: PathBuf,
    mmap: Mmap,
}

/// Features of one (backbone, preprocessing) pair.
pub struct FeatureCache {
    dir: PathBuf,
    dim: Option<usize>,
    segments: Vec<Segment>,
    index: HashMap<(String, String), (usize, usize)>,
    hits: AtomicU64,
    misses: AtomicU64,
    seq: u64,
}

const TENSORS: [&str; 3] = ["cls", "pooler", "patch_mean"];

fn sanitize(key: &str, what: &str) -> Result<()> {
    if key.is_empty()
        || key.starts_with('.')
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        bail!("feature cache {what} {key:?} must be a non-empty [A-Za-z0-9._-] name");
    }
    Ok(())
}

/// `(image_id, aug_id)` of each row, in order.
type SegmentKeys = Vec<(String, String)>;

fn read_segment(path: &Path) -> Result<(Mmap, SegmentKeys, usize)> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: segments are immutable once renamed into place; sv72 never rewrites them.
    let mmap =
        unsafe { Mmap::map(&f) }.with_context(|| format!("cannot map {}", path.display()))?;
    let (_, meta) = SafeTensors::read_metadata(&mmap)
        .with_context(|| format!("{} is not a valid safetensors file", path.display()))?;
    let keys_json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("keys"))
        .with_context(|| format!("{} has no `keys` metadata", path.display()))?;
    let keys: Vec<(String, String)> = serde_json::from_str(keys_json)
        .with_context(|| format!("{}: `keys` metadata is not valid", path.display()))?;
    let st = SafeTensors::deserialize(&mmap)
        .with_context(|| format!("{} is not a valid safetensors file", path.display()))?;
    let mut dim = None;
    for name in TENSORS {
        let t = st
            .tensor(name)
            .with_context(|| format!("{} lacks tensor `{name}`", path.display()))?;
        let shape = t.shape();
        if t.dtype() != Dtype::F32 || shape.len() != 2 || shape[0] != keys.len() {
            bail!(
                "{}: tensor `{name}` has an unexpected dtype/shape",
                path.display()
            );
        }
        if *dim.get_or_insert(shape[1]) != shape[1] {
            bail!("{}: tensors differ in width", path.display());
        }
    }
    Ok((mmap, keys, dim.unwrap_or(0)))
}

impl FeatureCache {
    /// Opens (creating if needed) the cache of one backbone and preprocessing recipe.
    pub fn open(root: &Path, backbone_key: &str, preprocess_key: &str) -> Result<Self> {
        sanitize(backbone_key, "backbone key")?;
        sanitize(preprocess_key, "preprocess key")?;
        let dir = root.join(backbone_key).join(preprocess_key);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create feature cache folder {}", dir.display()))?;
        let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("seg-") && n.ends_with(".safetensors"))
            })
            .collect();
        names.sort();
        let mut cache = Self {
            dir,
            dim: None,
            segments: Vec::new(),
            index: HashMap::new(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            seq: 0,
        };
        for path in names {
            match read_segment(&path) {
                Ok((mmap, keys, dim)) => {
                    if *cache.dim.get_or_insert(dim) != dim {
                        eprintln!(
                            "warning: ignoring feature cache segment {} (width {dim}, others {})",
                            path.display(),
                            cache.dim.unwrap_or(0)
                        );
                        continue;
                    }
                    let si = cache.segments.len();
                    for (row, k) in keys.into_iter().enumerate() {
                        cache.index.insert(k, (si, row));
                    }
                    cache.segments.push(Segment { path, mmap });
                }
                Err(e) => eprintln!("warning: ignoring unreadable feature cache segment: {e:#}"),
            }
        }
        Ok(cache)
    }

    /// The folder of this (backbone, preprocessing) pair.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether a feature is cached (does not count as a hit or miss).
    pub fn contains(&self, image_id: &str, aug_id: &str) -> bool {
        self.index
            .contains_key(&(image_id.to_string(), aug_id.to_string()))
    }

    /// The cached features of one view; counts a hit or a miss.
    pub fn get(&self, image_id: &str, aug_id: &str) -> Option<FeatureRow> {
        let found = self
            .index
            .get(&(image_id.to_string(), aug_id.to_string()))
            .and_then(|&(si, row)| self.read_row(si, row));
        match found {
            Some(_) => self.hits.fetch_add(1, Ordering::Relaxed),
            None => self.misses.fetch_add(1, Ordering::Relaxed),
        };
        found
    }

    fn read_row(&self, si: usize, row: usize) -> Option<FeatureRow> {
        let seg = &self.segments[si];
        let st = SafeTensors::deserialize(&seg.mmap).ok()?;
        let one = |name: &str| -> Option<Vec<f32>> {
            let t: TensorView = st.tensor(name).ok()?;
            let d = t.shape()[1];
            let bytes = t.data().get(row * d * 4..(row + 1) * d * 4)?;
            Some(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            )
        };
        Some(FeatureRow {
            cls: one("cls")?,
            pooler: one("pooler")?,
            patch_mean: one("patch_mean")?,
        })
    }

    /// Adds rows as one new segment, written atomically. Rows must share one width.
    pub fn put_many(&mut self, rows: &[(String, String, FeatureRow)]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let d = rows[0].2.cls.len();
        if let Some(dim) = self.dim {
            if dim != d {
                bail!(
                    "feature width {d} differs from the {dim} already cached in {}",
                    self.dir.display()
                );
            }
        }
        let mut bufs: Vec<Vec<u8>> = (0..3)
            .map(|_| Vec::with_capacity(rows.len() * d * 4))
            .collect();
        for (img, aug, r) in rows {
            for (buf, v) in bufs.iter_mut().zip([&r.cls, &r.pooler, &r.patch_mean]) {
                if v.len() != d {
                    bail!(
                        "features of {img}/{aug} have width {} (expected {d})",
                        v.len()
                    );
                }
                buf.extend_from_slice(bytemuck::cast_slice(v));
            }
        }
        let keys: Vec<(&str, &str)> = rows
            .iter()
            .map(|(i, a, _)| (i.as_str(), a.as_str()))
            .collect();
        let mut meta = HashMap::new();
        meta.insert("keys".to_string(), serde_json::to_string(&keys)?);
        let mut views = Vec::new();
        for (name, buf) in TENSORS.iter().zip(&bufs) {
            views.push((
                *name,
                TensorView::new(Dtype::F32, vec![rows.len(), d], buf)
                    .context("building a feature tensor")?,
            ));
        }
        let bytes = safetensors::serialize(views, Some(meta)).context("serialising features")?;
        self.seq += 1;
        let name = format!(
            "seg-{}-{}-{:04}.safetensors",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.6f"),
            std::process::id(),
            self.seq
        );
        let path = self.dir.join(name);
        fsx::write_atomic(&path, &bytes)?;
        let (mmap, keys, _) = read_segment(&path)?;
        let si = self.segments.len();
        for (row, k) in keys.into_iter().enumerate() {
            self.index.insert(k, (si, row));
        }
        self.segments.push(Segment { path, mmap });
        self.dim = Some(d);
        Ok(())
    }

    /// Hits and misses of this process, entries and segments on disk.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.index.len(),
            segments: self.segments.len(),
        }
    }

    /// Paths of the segment files (for tests and `du`-style reports).
    pub fn segment_paths(&self) -> Vec<&Path> {
        self.segments.iter().map(|s| s.path.as_path()).collect()
    }
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct HashMemo {
    /// `path|size|mtime_ns` → blake3 hex.
    files: BTreeMap<String, String>,
}

fn memo_key(path: &Path) -> Result<String> {
    let canon = path
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", path.display()))?;
    let md = std::fs::metadata(&canon)?;
    let mtime = md
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok(format!("{}|{}|{mtime}", canon.display(), md.len()))
}

/// The cache folder under a backbone's key for features made with `preprocess_id` at `dtype`:
/// f32 features keep the bare preprocess id (existing caches stay valid); bf16/f16 ones get
/// their own folder, so a half-precision run never serves features to an f32 one or back.
pub fn variant(preprocess_id: &str, dtype: crate::config::Dtype) -> String {
    use crate::config::Dtype;
    match dtype {
        Dtype::F32 => preprocess_id.to_string(),
        Dtype::F16 => format!("{preprocess_id}-f16"),
        Dtype::Bf16 => format!("{preprocess_id}-bf16"),
    }
}

/// The cache key of a backbone snapshot: `bb-` + 16 hex of a blake3 over `config.json` and the
/// full blake3 of each safetensors weights file (memoised under `cache_root`).
pub fn backbone_key(snapshot: &Path, cache_root: &Path) -> Result<String> {
    let config = snapshot.join("config.json");
    let cfg =
        std::fs::read(&config).with_context(|| format!("cannot read {}", config.display()))?;
    let mut files = vec![];
    if snapshot.join(SINGLE_FILE).is_file() {
        files.push(snapshot.join(SINGLE_FILE));
    } else if snapshot.join(INDEX_FILE).is_file() {
        let text = std::fs::read_to_string(snapshot.join(INDEX_FILE))?;
        let v: serde_json::Value = serde_json::from_str(&text)?;
        let mut shards: Vec<String> = v["weight_map"]
            .as_object()
            .map(|m| {
                m.values()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        shards.sort();
        shards.dedup();
        files.extend(shards.into_iter().map(|s| snapshot.join(s)));
    } else {
        bail!(
            "no weights in {}: expected {SINGLE_FILE} or {INDEX_FILE}",
            snapshot.display()
        );
    }
    let memo_path = cache_root.join("weights-hashes.json");
    let mut memo: HashMemo = std::fs::read(&memo_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut changed = false;
    let mut h = blake3::Hasher::new();
    h.update(b"sv72-backbone-v1\0");
    h.update(hash::content_hash(&cfg).as_bytes());
    for f in &files {
        let k = memo_key(f)?;
        let fh = match memo.files.get(&k) {
            Some(v) => v.clone(),
            None => {
                let v = hash::file_hash(f)?;
                memo.files.insert(k, v.clone());
                changed = true;
                v
            }
        };
        h.update(fh.as_bytes());
    }
    if changed {
        // Best effort: a read-only cache only costs a re-hash next time.
        let _ = fsx::write_json_atomic(&memo_path, &memo);
    }
    Ok(format!("bb-{}", &h.finalize().to_hex()[..16]))
}

#[cfg(test)]
mod tests {
    use super::variant;
    use crate::config::Dtype;

    #[test]
    fn half_precision_features_get_their_own_cache_folder() {
        assert_eq!(variant("processor-1", Dtype::F32), "processor-1");
        let bf16 = variant("processor-1", Dtype::Bf16);
        let f16 = variant("processor-1", Dtype::F16);
        assert!(bf16 != "processor-1" && f16 != "processor-1" && bf16 != f16);
    }
}
