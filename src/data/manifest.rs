//! The manifest: one row per image, the artifact every stage after `ingest` reads.
//!
//! Stored as `datasets/<name>/manifest.parquet`. `path` is absolute, or relative to the datasets
//! root (`paths.datasets`) for images kept in the content-addressed store.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use polars::prelude::{
    Column, DataFrame, DataType, ParquetCompression, ParquetReader, ParquetWriter, SerReader,
};
use serde::{Deserialize, Serialize};

use crate::util::fsx;

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
    /// The source's grouping value (`<column>:<value>`, e.g. a video id): rows sharing it are
    /// one group across ingests.
    pub group_key: Option<String>,
    /// For an image-to-image child: the content id of the image it was made from (it joins the
    /// parent's group and split).
    pub parent: Option<String>,
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

/// File name of a dataset's manifest inside `datasets/<name>/`.
pub const MANIFEST_FILE: &str = "manifest.parquet";

/// The manifest of a dataset given by name (`datasets/<name>/manifest.parquet`), by folder, or by
/// the manifest file itself. Anything with a path separator or an existing folder is a path.
pub fn manifest_path(datasets_root: &Path, name_or_path: &str) -> PathBuf {
    let p = Path::new(name_or_path);
    if p.extension().is_some_and(|e| e == "parquet") {
        return p.to_path_buf();
    }
    let is_path = p.is_absolute()
        || name_or_path.contains('/')
        || name_or_path.contains(std::path::MAIN_SEPARATOR)
        || (p.is_dir() && p.join(MANIFEST_FILE).exists());
    if is_path {
        p.join(MANIFEST_FILE)
    } else {
        datasets_root.join(name_or_path).join(MANIFEST_FILE)
    }
}

/// Writes `rows` to `path` as Parquet, atomically (a crash leaves the previous manifest intact).
pub fn write_manifest(path: &Path, rows: &[ManifestRow]) -> Result<()> {
    let mut df = manifest_frame(rows)?;
    fsx::write_atomic_with(path, |w| {
        ParquetWriter::new(w)
            .with_compression(ParquetCompression::Zstd(None))
            .finish(&mut df)
            .context("Parquet encoding failed")?;
        Ok(())
    })
}

fn manifest_frame(rows: &[ManifestRow]) -> Result<DataFrame> {
    fn s<'a>(rows: &'a [ManifestRow], f: impl Fn(&'a ManifestRow) -> &'a str) -> Vec<&'a str> {
        rows.iter().map(f).collect()
    }
    let cols = vec![
        Column::new("id".into(), s(rows, |r| &r.id)),
        Column::new("path".into(), s(rows, |r| &r.path)),
        Column::new(
            "label".into(),
            rows.iter().map(|r| r.label as u32).collect::<Vec<_>>(),
        ),
        Column::new("source".into(), s(rows, |r| r.source.as_str())),
        Column::new("generator".into(), s(rows, |r| &r.generator)),
        Column::new(
            "width".into(),
            rows.iter().map(|r| r.width).collect::<Vec<_>>(),
        ),
        Column::new(
            "height".into(),
            rows.iter().map(|r| r.height).collect::<Vec<_>>(),
        ),
        Column::new("format".into(), s(rows, |r| &r.format)),
        Column::new("split".into(), s(rows, |r| r.split.as_str())),
        Column::new(
            "phash".into(),
            rows.iter().map(|r| r.phash).collect::<Vec<_>>(),
        ),
        Column::new("group".into(), s(rows, |r| &r.group)),
        Column::new("ingested_at".into(), s(rows, |r| &r.ingested_at)),
        Column::new("origin".into(), s(rows, |r| &r.origin)),
        Column::new(
            "variant_of".into(),
            rows.iter()
                .map(|r| r.variant_of.as_deref())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "aug".into(),
            rows.iter().map(|r| r.aug.as_deref()).collect::<Vec<_>>(),
        ),
        Column::new(
            "group_key".into(),
            rows.iter()
                .map(|r| r.group_key.as_deref())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "parent".into(),
            rows.iter().map(|r| r.parent.as_deref()).collect::<Vec<_>>(),
        ),
    ];
    Ok(DataFrame::new(rows.len(), cols)?)
}

/// Reads a manifest written by [`write_manifest`]. A missing column, a column of the wrong type
/// or an invalid value is an error naming the file, the column and the row.
pub fn read_manifest(path: &Path) -> Result<Vec<ManifestRow>> {
    let file = std::fs::File::open(path).with_context(|| {
        format!(
            "cannot open manifest {} (run `sv72 ingest` first, or check the dataset name)",
            path.display()
        )
    })?;
    let df = ParquetReader::new(file)
        .finish()
        .with_context(|| format!("{} is not a readable Parquet file", path.display()))?;
    let n = df.height();
    let ctx = ColCtx { df: &df, path };
    let id = ctx.strings("id", false)?;
    let rel = ctx.strings("path", false)?;
    let label = ctx.ints("label")?;
    let source = ctx.strings("source", false)?;
    let generator = ctx.strings("generator", false)?;
    let width = ctx.ints("width")?;
    let height = ctx.ints("height")?;
    let format = ctx.strings("format", false)?;
    let split = ctx.strings("split", false)?;
    let phash = ctx.u64s("phash")?;
    let group = ctx.strings("group", false)?;
    let ingested_at = ctx.strings("ingested_at", false)?;
    let origin = ctx.strings("origin", false)?;
    let variant_of = ctx.strings("variant_of", true)?;
    let aug = ctx.strings("aug", true)?;
    // Added later: manifests written before them have neither column.
    let group_key = ctx.optional_strings("group_key", n)?;
    let parent = ctx.optional_strings("parent", n)?;
    let mut rows = Vec::with_capacity(n);
    for i in 0..n {
        let bad = |col: &str, why: String| {
            anyhow::anyhow!(
                "{}: column `{col}`, row {i}: {why}; the manifest is damaged, re-run `sv72 ingest`",
                path.display()
            )
        };
        let req = |v: &Option<String>, col: &str| {
            v.clone().ok_or_else(|| bad(col, "missing value".into()))
        };
        let lab = label[i].ok_or_else(|| bad("label", "missing value".into()))?;
        if !(0..=1).contains(&lab) {
            return Err(bad("label", format!("{lab} is not 0 or 1")));
        }
        let dim = |v: Option<i64>, col: &str| -> Result<u32> {
            let v = v.ok_or_else(|| bad(col, "missing value".into()))?;
            u32::try_from(v).map_err(|_| bad(col, format!("{v} is not a valid size")))
        };
        rows.push(ManifestRow {
            id: req(&id[i], "id")?,
            path: req(&rel[i], "path")?,
            label: lab as u8,
            source: req(&source[i], "source")?
                .parse()
                .map_err(|e: anyhow::Error| bad("source", e.to_string()))?,
            generator: req(&generator[i], "generator")?,
            width: dim(width[i], "width")?,
            height: dim(height[i], "height")?,
            format: req(&format[i], "format")?,
            split: req(&split[i], "split")?
                .parse()
                .map_err(|e: anyhow::Error| bad("split", e.to_string()))?,
            phash: phash[i].ok_or_else(|| bad("phash", "missing value".into()))?,
            group: req(&group[i], "group")?,
            ingested_at: req(&ingested_at[i], "ingested_at")?,
            origin: req(&origin[i], "origin")?,
            variant_of: variant_of[i].clone(),
            aug: aug[i].clone(),
            group_key: group_key[i].clone(),
            parent: parent[i].clone(),
        });
    }
    Ok(rows)
}

struct ColCtx<'a> {
    df: &'a DataFrame,
    path: &'a Path,
}

impl ColCtx<'_> {
    fn column(&self, name: &str) -> Result<&Column> {
        self.df.column(name).map_err(|_| {
            anyhow::anyhow!(
                "{}: column `{name}` is missing (found: {}); not an sv72 manifest, or written by \
                 an older version: re-run `sv72 ingest`",
                self.path.display(),
                self.df
                    .get_column_names()
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }

    fn wrong_type(&self, name: &str, want: &str, got: &DataType) -> anyhow::Error {
        anyhow::anyhow!(
            "{}: column `{name}` has type {got}, expected {want}",
            self.path.display()
        )
    }

    fn strings(&self, name: &str, nullable: bool) -> Result<Vec<Option<String>>> {
        let c = self.column(name)?;
        match c.dtype() {
            DataType::String => {}
            DataType::Null if nullable => return Ok(vec![None; c.len()]),
            other => return Err(self.wrong_type(name, "string", other)),
        }
        let ca = c.str()?;
        Ok(ca.iter().map(|v| v.map(str::to_owned)).collect())
    }

    /// A nullable string column that may be absent (all `None` then).
    fn optional_strings(&self, name: &str, n: usize) -> Result<Vec<Option<String>>> {
        if self.df.column(name).is_err() {
            return Ok(vec![None; n]);
        }
        self.strings(name, true)
    }

    fn ints(&self, name: &str) -> Result<Vec<Option<i64>>> {
        let c = self.column(name)?;
        if !c.dtype().is_integer() {
            return Err(self.wrong_type(name, "integer", c.dtype()));
        }
        let c = c.cast(&DataType::Int64)?;
        Ok(c.i64()?.iter().collect())
    }

    fn u64s(&self, name: &str) -> Result<Vec<Option<u64>>> {
        let c = self.column(name)?;
        if c.dtype() != &DataType::UInt64 {
            return Err(self.wrong_type(name, "u64", c.dtype()));
        }
        Ok(c.u64()?.iter().collect())
    }
}

/// Validates a dataset name used as a folder under the datasets root.
pub fn check_dataset_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name != "store"
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        bail!(
            "dataset name {name:?} is not usable: use letters, digits, `-`, `_` or `.`, not \
             starting with `.` (and not `store`, which holds the shared image store)"
        );
    }
    Ok(())
}

/// Splits `MANIFEST[:split]`; a trailing `:train|val|test` is the split.
pub fn parse_on(on: &str) -> Result<(String, Split)> {
    if let Some((m, s)) = on.rsplit_once(':') {
        if let Ok(split) = s.parse::<Split>() {
            if m.is_empty() {
                bail!("--on {on:?}: the manifest part is empty");
            }
            return Ok((m.to_string(), split));
        }
    }
    Ok((on.to_string(), Split::Test))
}

#[cfg(test)]
mod io_tests {
    use super::*;

    fn row(i: u32) -> ManifestRow {
        ManifestRow {
            id: format!("{i:064x}"),
            path: format!("/data/{i}.jpg"),
            label: (i % 2) as u8,
            source: if i.is_multiple_of(3) {
                SourceKind::Synthetic
            } else {
                SourceKind::Real
            },
            generator: "natix".into(),
            width: 640 + i,
            height: 480,
            format: "jpeg".into(),
            split: Split::ALL[i as usize % 3],
            phash: u64::MAX - i as u64,
            group: format!("g{i}"),
            ingested_at: "2025-01-01T00:00:00Z".into(),
            origin: format!("/data/{i}.jpg"),
            variant_of: (i == 2).then(|| "abc".to_string()),
            aug: (i == 2).then(|| "jpeg-q70".to_string()),
            group_key: (i == 3).then(|| "video_id:v7".to_string()),
            parent: (i == 4).then(|| "def".to_string()),
        }
    }

    #[test]
    fn manifest_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.parquet");
        let rows: Vec<ManifestRow> = (0..5).map(row).collect();
        write_manifest(&p, &rows).unwrap();
        assert_eq!(read_manifest(&p).unwrap(), rows);
        write_manifest(&p, &[]).unwrap();
        assert!(read_manifest(&p).unwrap().is_empty());
    }

    #[test]
    fn manifest_without_the_newer_columns_reads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("old.parquet");
        let mut df = manifest_frame(&[row(3)])
            .unwrap()
            .drop("group_key")
            .unwrap()
            .drop("parent")
            .unwrap();
        ParquetWriter::new(std::fs::File::create(&p).unwrap())
            .finish(&mut df)
            .unwrap();
        let back = read_manifest(&p).unwrap();
        assert_eq!(back[0].group_key, None);
        assert_eq!(back[0].id, row(3).id);
    }

    #[test]
    fn missing_column_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.parquet");
        let mut df = manifest_frame(&[row(1)]).unwrap().drop("phash").unwrap();
        let f = std::fs::File::create(&p).unwrap();
        ParquetWriter::new(f).finish(&mut df).unwrap();
        let err = format!("{:#}", read_manifest(&p).unwrap_err());
        assert!(
            err.contains("phash") && err.contains("bad.parquet"),
            "{err}"
        );
    }

    #[test]
    fn manifest_path_accepts_names_and_paths() {
        let root = Path::new("/srv/datasets");
        assert_eq!(
            manifest_path(root, "real"),
            Path::new("/srv/datasets/real/manifest.parquet")
        );
        assert_eq!(
            manifest_path(root, "/x/y/manifest.parquet"),
            Path::new("/x/y/manifest.parquet")
        );
        assert_eq!(
            manifest_path(root, "some/dir"),
            Path::new("some/dir/manifest.parquet")
        );
        assert!(check_dataset_name("natix-real_v2").is_ok());
        assert!(check_dataset_name("../x").is_err());
        assert!(check_dataset_name("store").is_err());
    }
}
