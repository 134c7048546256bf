//! Input sources of `sv72 ingest`: class-folder trees, Hugging Face Parquet files and CSV lists
//! (`path,label[,source,generator,group,parent]`).
//!
//! [`plan`] validates every source before any image is touched (missing columns, bad labels and
//! unknown folders stop the run with a message naming the file and column), keeping only
//! metadata. [`Plan::for_each_batch`] then yields the inputs in bounded batches: file paths for
//! folders and CSVs, encoded bytes for Parquet rows, read `batch_rows` rows at a time.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use polars::prelude::{DataType, ParquetReader, SerReader};
use walkdir::WalkDir;

use crate::config::IngestConfig;

use super::manifest::SourceKind;

/// Source kind and generator given on the command line; CSV columns override them per row.
#[derive(Debug, Clone, Default)]
pub struct Tag {
    pub source: Option<SourceKind>,
    pub generator: Option<String>,
}

/// The inputs named on the command line.
#[derive(Debug, Clone, Default)]
pub struct SourceSpec {
    pub folders: Vec<PathBuf>,
    /// Files, folders (searched for `*.parquet`) or globs (`*`, `?` in the file name).
    pub parquets: Vec<String>,
    pub csvs: Vec<PathBuf>,
}

/// Where an input's bytes are.
#[derive(Debug, Clone)]
pub enum Payload {
    /// A file referenced in place.
    File(PathBuf),
    /// Bytes that came inside a Parquet file (`None`: the cell was null).
    Bytes(Option<Vec<u8>>),
}

/// One input image with its tags.
#[derive(Debug, Clone)]
pub struct InputItem {
    pub origin: String,
    pub payload: Payload,
    pub label: u8,
    pub source: SourceKind,
    pub generator: String,
    /// `<column>:<value>` of the grouping column, when the source has one.
    pub group_key: Option<String>,
    /// Content id of the image this one was made from (CSV `parent`, e.g. `generated.csv`).
    pub parent: Option<String>,
}

#[derive(Debug, Clone)]
struct FileItem {
    path: PathBuf,
    label: u8,
    source: SourceKind,
    generator: String,
    group_key: Option<String>,
    parent: Option<String>,
}

#[derive(Debug, Clone)]
struct ParquetSource {
    path: PathBuf,
    labels: Vec<u8>,
    /// The image column is a plain binary column rather than the `{bytes, path}` struct.
    plain_binary: bool,
    source: SourceKind,
    generator: String,
    /// Per row, `<column>:<value>` of `ingest.group_column`.
    group_keys: Option<Vec<Option<String>>>,
}

/// Validated inputs, holding only metadata.
#[derive(Debug, Default)]
pub struct Plan {
    files: Vec<FileItem>,
    parquets: Vec<ParquetSource>,
    image_column: String,
}

impl Plan {
    /// Number of inputs.
    pub fn len(&self) -> usize {
        self.files.len() + self.parquets.iter().map(|p| p.labels.len()).sum::<usize>()
    }

    /// True when there is nothing to ingest.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` with consecutive batches of at most `batch` inputs, in a deterministic order.
    pub fn for_each_batch(
        &self,
        batch: usize,
        mut f: impl FnMut(Vec<InputItem>) -> Result<()>,
    ) -> Result<()> {
        let batch = batch.max(1);
        for chunk in self.files.chunks(batch) {
            f(chunk
                .iter()
                .map(|it| InputItem {
                    origin: it.path.display().to_string(),
                    payload: Payload::File(it.path.clone()),
                    label: it.label,
                    source: it.source,
                    generator: it.generator.clone(),
                    group_key: it.group_key.clone(),
                    parent: it.parent.clone(),
                })
                .collect())?;
        }
        for pq in &self.parquets {
            let mut off = 0;
            while off < pq.labels.len() {
                let n = batch.min(pq.labels.len() - off);
                let items = read_parquet_batch(pq, &self.image_column, off, n)?;
                f(items)?;
                off += n;
            }
        }
        Ok(())
    }
}

/// Validates every source and lists its inputs (metadata only).
pub fn plan(spec: &SourceSpec, cfg: &IngestConfig, tag: &Tag) -> Result<Plan> {
    let mut plan = Plan {
        image_column: cfg.parquet_image_column.clone(),
        ..Default::default()
    };
    for dir in &spec.folders {
        let (source, generator) = require_tag(tag, &format!("folder {}", dir.display()))?;
        plan_folder(dir, cfg, source, &generator, &mut plan.files)?;
    }
    for csv_path in &spec.csvs {
        plan_csv(csv_path, cfg, tag, &mut plan.files)?;
    }
    for arg in &spec.parquets {
        for path in expand_parquet_arg(arg)? {
            let (source, generator) = require_tag(tag, &format!("Parquet {}", path.display()))?;
            plan.parquets
                .push(plan_parquet(&path, cfg, source, generator)?);
        }
    }
    Ok(plan)
}

fn require_tag(tag: &Tag, what: &str) -> Result<(SourceKind, String)> {
    let source = tag
        .source
        .with_context(|| format!("{what}: pass --source real|synthetic"))?;
    let generator = tag
        .generator
        .clone()
        .with_context(|| format!("{what}: pass --generator NAME (e.g. natix, sdxl-t2i)"))?;
    Ok((source, generator))
}

fn plan_folder(
    dir: &Path,
    cfg: &IngestConfig,
    source: SourceKind,
    generator: &str,
    out: &mut Vec<FileItem>,
) -> Result<()> {
    if !dir.is_dir() {
        bail!("--folder {}: not a folder", dir.display());
    }
    let mut found_class = false;
    for (name, label) in [(&cfg.positive_dir, 1u8), (&cfg.negative_dir, 0u8)] {
        let class_dir = dir.join(name);
        if !class_dir.is_dir() {
            continue;
        }
        found_class = true;
        let files = walk(&class_dir)?;
        out.extend(files.into_iter().map(|path| FileItem {
            path,
            label,
            source,
            generator: generator.to_string(),
            group_key: None,
            parent: None,
        }));
    }
    if !found_class {
        bail!(
            "--folder {}: has neither a `{}/` nor a `{}/` subfolder (class folder names come \
             from ingest.positive_dir / ingest.negative_dir)",
            dir.display(),
            cfg.positive_dir,
            cfg.negative_dir
        );
    }
    Ok(())
}

/// Lists files under `dir` recursively, sorted, skipping hidden entries; follows symlinks but
/// never the same folder twice. Paths are listed under each folder's canonical path; a dangling
/// link is still listed so it gets quarantined.
fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let root = dir
        .canonicalize()
        .with_context(|| format!("cannot open folder {}", dir.display()))?;
    let mut visited = HashSet::new();
    let mut canonical_dirs: HashMap<PathBuf, PathBuf> = HashMap::new();
    let mut listed = |p: &Path| -> PathBuf {
        let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
            return p.to_path_buf();
        };
        let canon = canonical_dirs
            .entry(parent.to_path_buf())
            .or_insert_with(|| {
                parent
                    .canonicalize()
                    .unwrap_or_else(|_| parent.to_path_buf())
            });
        canon.join(name)
    };
    let mut out = Vec::new();
    let walker = WalkDir::new(&root)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            let hidden = e.depth() > 0 && e.file_name().to_string_lossy().starts_with('.');
            let seen = e.file_type().is_dir()
                && !visited.insert(e.path().canonicalize().unwrap_or_else(|_| e.path().into()));
            !hidden && !seen
        });
    for entry in walker {
        match entry {
            Ok(e) if e.file_type().is_dir() => {}
            Ok(e) => out.push(listed(e.path())),
            // A link back to a folder above: that folder is being listed already.
            Err(e) if e.loop_ancestor().is_some() => {}
            Err(e) => match e.path() {
                Some(p)
                    if e.depth() > 0
                        && fs::symlink_metadata(p).is_ok()
                        && fs::metadata(p).is_err() =>
                {
                    out.push(listed(p))
                }
                _ => {
                    let at = e.path().unwrap_or(&root).display().to_string();
                    return Err(anyhow::Error::new(e)).context(format!("cannot list folder {at}"));
                }
            },
        }
    }
    Ok(out)
}

fn parse_label(raw: &str, cfg: &IngestConfig) -> Option<u8> {
    let v = raw.trim();
    match v {
        "1" | "roadwork" => Some(1),
        "0" | "none" => Some(0),
        _ if v == cfg.positive_dir => Some(1),
        _ if v == cfg.negative_dir => Some(0),
        _ => None,
    }
}

fn plan_csv(path: &Path, cfg: &IngestConfig, tag: &Tag, out: &mut Vec<FileItem>) -> Result<()> {
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .with_context(|| format!("--csv {}: cannot open", path.display()))?;
    let headers = rdr
        .headers()
        .with_context(|| format!("--csv {}: cannot read the header line", path.display()))?
        .clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(name))
    };
    let need = |name: &str| {
        col(name).with_context(|| {
            format!(
                "--csv {}: column `{name}` is missing (header: {:?}); expected path,label[,source,generator,group,parent]",
                path.display(),
                headers.iter().collect::<Vec<_>>().join(",")
            )
        })
    };
    let (pi, li) = (need("path")?, need("label")?);
    let (si, gi) = (col("source"), col("generator"));
    // The grouping column: the configured one (which must exist), else a `group` column.
    let (group_name, ki) = match &cfg.group_column {
        Some(name) => (name.clone(), Some(need(name)?)),
        None => ("group".to_string(), col("group")),
    };
    let parent_i = col("parent");
    let base = path
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| PathBuf::from("."));
    let base = base.canonicalize().unwrap_or(base);
    for (i, rec) in rdr.records().enumerate() {
        let line = i + 2;
        let rec =
            rec.with_context(|| format!("--csv {}: line {line} is malformed", path.display()))?;
        let cell = |idx: Option<usize>| idx.and_then(|k| rec.get(k)).map(str::trim).unwrap_or("");
        let at = |column: &str| format!("--csv {}: line {line}, column `{column}`", path.display());
        let raw_path = cell(Some(pi));
        if raw_path.is_empty() {
            bail!("{}: empty path", at("path"));
        }
        let raw_label = cell(Some(li));
        let label = parse_label(raw_label, cfg).with_context(|| {
            format!(
                "{}: label {raw_label:?} is not 0/1 or {}/{}",
                at("label"),
                cfg.positive_dir,
                cfg.negative_dir
            )
        })?;
        let source = match cell(si) {
            "" => tag
                .source
                .with_context(|| format!("{}: empty, and no --source was given", at("source")))?,
            s => s
                .parse()
                .with_context(|| format!("{}: bad source value", at("source")))?,
        };
        let generator = match cell(gi) {
            "" => tag.generator.clone().with_context(|| {
                format!("{}: empty, and no --generator was given", at("generator"))
            })?,
            g => g.to_string(),
        };
        let p = Path::new(raw_path);
        let full = if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        };
        let full = full.canonicalize().unwrap_or(full);
        let group_key = match cell(ki) {
            "" => None,
            v => Some(format!("{group_name}:{v}")),
        };
        let parent = match cell(parent_i) {
            "" => None,
            v if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Some(v.to_ascii_lowercase())
            }
            v => bail!(
                "{}: {v:?} is not a content id (64 hex digits, the blake3 of the parent image)",
                at("parent")
            ),
        };
        out.push(FileItem {
            path: full,
            label,
            source,
            generator,
            group_key,
            parent,
        });
    }
    Ok(())
}

/// Expands one `--parquet` argument: a file, a folder (all `*.parquet` below it) or a glob.
pub fn expand_parquet_arg(arg: &str) -> Result<Vec<PathBuf>> {
    let p = Path::new(arg);
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.contains(['*', '?']) {
        let dir = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut found: Vec<PathBuf> = fs::read_dir(&dir)
            .with_context(|| format!("--parquet {arg}: cannot list {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|f| {
                f.is_file()
                    && f.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| wildcard(name.as_bytes(), n.as_bytes()))
            })
            .collect();
        found.sort();
        if found.is_empty() {
            bail!("--parquet {arg}: no file matches");
        }
        return Ok(found);
    }
    if p.is_dir() {
        let mut files = walk(p)?;
        files.retain(|f| f.extension().is_some_and(|e| e == "parquet"));
        if files.is_empty() {
            bail!("--parquet {arg}: the folder holds no .parquet file");
        }
        return Ok(files);
    }
    if !p.is_file() {
        bail!("--parquet {arg}: no such file");
    }
    Ok(vec![p.to_path_buf()])
}

/// `*` and `?` matching on a file name.
fn wildcard(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while i < s.len() {
        if p < pat.len() && (pat[p] == b'?' || pat[p] == s[i]) {
            p += 1;
            i += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some(p);
            mark = i;
            p += 1;
        } else if let Some(sp) = star {
            p = sp + 1;
            mark += 1;
            i = mark;
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

fn open_parquet(path: &Path) -> Result<ParquetReader<fs::File>> {
    let f = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(ParquetReader::new(f))
}

fn plan_parquet(
    path: &Path,
    cfg: &IngestConfig,
    source: SourceKind,
    generator: String,
) -> Result<ParquetSource> {
    let shown = path.display();
    let empty = open_parquet(path)?
        .with_slice(Some((0, 0)))
        .finish()
        .with_context(|| format!("{shown} is not a readable Parquet file"))?;
    let names = empty
        .get_column_names()
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let (img, lab) = (&cfg.parquet_image_column, &cfg.parquet_label_column);
    let img_col = empty.column(img).map_err(|_| {
        anyhow::anyhow!(
            "{shown}: image column `{img}` is missing (columns: {names}); set \
             ingest.parquet_image_column"
        )
    })?;
    let plain_binary = match img_col.dtype() {
        DataType::Binary => true,
        DataType::Struct(fields)
            if fields
                .iter()
                .any(|f| f.name() == "bytes" && f.dtype() == &DataType::Binary) =>
        {
            false
        }
        other => bail!(
            "{shown}: column `{img}` has type {other}; expected a struct {{bytes: binary, path: \
             string}} (Hugging Face Image feature) or binary"
        ),
    };
    let lab_col = empty.column(lab).map_err(|_| {
        anyhow::anyhow!(
            "{shown}: label column `{lab}` is missing (columns: {names}); set \
             ingest.parquet_label_column"
        )
    })?;
    if !lab_col.dtype().is_integer() && lab_col.dtype() != &DataType::Boolean {
        bail!(
            "{shown}: label column `{lab}` has type {}; expected integers 0/1",
            lab_col.dtype()
        );
    }
    let df = open_parquet(path)?
        .with_columns(Some(vec![lab.clone()]))
        .finish()
        .with_context(|| format!("{shown}: cannot read column `{lab}`"))?;
    let values = df.column(lab)?.cast(&DataType::Int64)?;
    let mut labels = Vec::with_capacity(values.len());
    for (row, v) in values.i64()?.iter().enumerate() {
        match v {
            Some(0) => labels.push(0),
            Some(1) => labels.push(1),
            Some(other) => bail!(
                "{shown}: column `{lab}`, row {row}: label {other} is not 0 (none) or 1 (roadwork)"
            ),
            None => bail!("{shown}: column `{lab}`, row {row}: label is null"),
        }
    }
    let group_keys = match &cfg.group_column {
        None => None,
        Some(g) => {
            if empty.column(g).is_err() {
                bail!(
                    "{shown}: grouping column `{g}` is missing (columns: {names}); fix \
                     ingest.group_column / --group-column"
                );
            }
            let df = open_parquet(path)?
                .with_columns(Some(vec![g.clone()]))
                .finish()
                .with_context(|| format!("{shown}: cannot read column `{g}`"))?;
            let c = df.column(g)?;
            let c = c.cast(&DataType::String).map_err(|_| {
                anyhow::anyhow!(
                    "{shown}: grouping column `{g}` has type {}; expected strings or integers",
                    c.dtype()
                )
            })?;
            Some(
                c.str()?
                    .iter()
                    .map(|v| v.filter(|v| !v.is_empty()).map(|v| format!("{g}:{v}")))
                    .collect(),
            )
        }
    };
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    Ok(ParquetSource {
        path,
        labels,
        plain_binary,
        source,
        generator,
        group_keys,
    })
}

fn read_parquet_batch(
    pq: &ParquetSource,
    image_column: &str,
    off: usize,
    n: usize,
) -> Result<Vec<InputItem>> {
    let shown = pq.path.display();
    let df = open_parquet(&pq.path)?
        .with_columns(Some(vec![image_column.to_string()]))
        .with_slice(Some((off, n)))
        .finish()
        .with_context(|| format!("{shown}: cannot read rows {off}..{}", off + n))?;
    let col = df.column(image_column)?;
    let bytes_series;
    let bytes = if pq.plain_binary {
        col.binary()?
    } else {
        bytes_series = col.struct_()?.field_by_name("bytes")?;
        bytes_series.binary()?
    };
    if bytes.len() != n {
        bail!(
            "{shown}: expected {n} rows at offset {off}, read {}",
            bytes.len()
        );
    }
    Ok(bytes
        .iter()
        .enumerate()
        .map(|(i, b)| InputItem {
            origin: format!("{shown}#{}", off + i),
            payload: Payload::Bytes(b.map(<[u8]>::to_vec)),
            label: pq.labels[off + i],
            source: pq.source,
            generator: pq.generator.clone(),
            group_key: pq.group_keys.as_ref().and_then(|k| k[off + i].clone()),
            parent: None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_matches_file_names() {
        assert!(wildcard(
            b"train-*.parquet",
            b"train-00001-of-00004.parquet"
        ));
        assert!(wildcard(b"*", b"x"));
        assert!(wildcard(b"a?c", b"abc"));
        assert!(!wildcard(b"train-*.parquet", b"test-0.parquet"));
        assert!(!wildcard(b"*.parquet", b"x.parquet.tmp"));
    }
}
