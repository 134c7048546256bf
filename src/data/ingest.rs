//! The ingest pipeline: sources → validated, deduplicated, grouped and split manifest.
//!
//! Memory stays bounded by processing inputs in batches (`ingest.parquet_batch_rows`): a batch
//! is read, hashed, decoded and fingerprinted in parallel, and only its metadata rows are kept.
//! An image whose content id is already known is never decoded again, which makes re-running
//! ingest over the same folders cheap (one read and one blake3 per file).
//!
//! Layout under the datasets root:
//! - `<name>/manifest.parquet`, `<name>/quarantine.csv`, `<name>/label_conflicts.csv`
//!   (and `<name>/group_bridges.csv` when a new image bridged existing groups);
//! - `store/<ab>/<blake3>.<ext>`: images that arrived inside Parquet files, written once and
//!   shared by every dataset. Folder and CSV images are referenced in place (absolute path).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rayon::prelude::*;

use crate::config::{IngestConfig, SplitConfig};
use crate::util::{fsx, hash::content_hash, progress};

use super::decode::{self, DecodeLimits, Reason, Rejection};
use super::manifest::{
    check_dataset_name, read_manifest, write_manifest, ManifestRow, SourceKind, Split,
    MANIFEST_FILE,
};
use super::neardup::{self, Bridge};
use super::quarantine::{self, QuarantineEntry, QUARANTINE_FILE};
use super::sources::{self, InputItem, Payload, SourceSpec, Tag};

/// File listing groups whose members carry different labels.
pub const CONFLICTS_FILE: &str = "label_conflicts.csv";
/// File listing new images that were near duplicates of several existing groups.
pub const BRIDGES_FILE: &str = "group_bridges.csv";
/// Folder under the datasets root holding the content-addressed image store.
pub const STORE_DIR: &str = "store";

/// Everything `ingest` needs besides the inputs.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub datasets_root: PathBuf,
    pub name: String,
    pub ingest: IngestConfig,
    pub split: SplitConfig,
    pub tag: Tag,
}

/// One image whose label disagrees with its near-duplicate group or exact duplicate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConflictRow {
    /// `near_duplicate` (group members disagree) or `exact_duplicate` (same bytes, other label).
    pub kind: String,
    pub group: String,
    pub split: String,
    pub id: String,
    pub label: u8,
    pub origin: String,
}

/// Counts of one ingest run, printed as the closing table.
#[derive(Debug, Clone, Default)]
pub struct IngestReport {
    pub manifest: PathBuf,
    /// Inputs looked at.
    pub scanned: usize,
    /// Rows added to the manifest.
    pub added: usize,
    /// Inputs whose content was already in the manifest before this run.
    pub already_present: usize,
    /// Inputs whose content appeared earlier in this run (merged into one row).
    pub duplicates_merged: usize,
    /// New images that joined a group already in the manifest.
    pub joined_existing_groups: usize,
    /// Groups with two or more members, over the whole manifest.
    pub near_dup_groups: usize,
    /// Images in such groups.
    pub near_dup_images: usize,
    pub bridges: Vec<Bridge>,
    /// Groups whose members carry different labels (over the whole manifest).
    pub label_conflict_groups: usize,
    pub conflicts: Vec<ConflictRow>,
    /// Quarantined this run, by reason code.
    pub quarantined: BTreeMap<String, usize>,
    /// Rows of the manifest per (label, source, split).
    pub counts: BTreeMap<(u8, SourceKind, Split), usize>,
    /// Total rows in the manifest.
    pub total_rows: usize,
    /// Distinct groups per split (train, val, test), over the whole manifest.
    pub groups_per_split: [usize; 3],
    /// Rows with a group key (grouping column), over the whole manifest.
    pub keyed_rows: usize,
    /// New image-to-image children whose parent is in this manifest, in another dataset's, or
    /// nowhere (those are grouped by pHash alone).
    pub parents_here: usize,
    pub parents_elsewhere: usize,
    pub parents_missing: usize,
}

impl IngestReport {
    /// Inputs quarantined this run.
    pub fn quarantined_total(&self) -> usize {
        self.quarantined.values().sum()
    }
}

enum Outcome {
    New(ManifestRow),
    Known {
        id: String,
        label: u8,
        origin: String,
    },
    Rejected(QuarantineEntry),
}

/// Ingests `spec` into `datasets/<name>/`. Bad images are quarantined and the run goes on; an
/// error is returned for invalid sources (before anything is written) or when every input
/// failed.
pub fn ingest(spec: &SourceSpec, opts: &IngestOptions) -> Result<IngestReport> {
    check_dataset_name(&opts.name)?;
    let cfg = &opts.ingest;
    let plan = sources::plan(spec, cfg, &opts.tag)?;
    if plan.is_empty() {
        anyhow::bail!("no input images found: give --folder, --parquet or --csv with images");
    }
    let root = &opts.datasets_root;
    let dir = root.join(&opts.name);
    let manifest_file = dir.join(MANIFEST_FILE);
    let mut rows = if manifest_file.exists() {
        read_manifest(&manifest_file)?
    } else {
        Vec::new()
    };
    let n_existing = rows.len();
    let mut index: HashMap<String, usize> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.clone(), i))
        .collect();
    let limits = DecodeLimits {
        max_pixels: cfg.max_pixels,
        max_file_bytes: cfg.max_file_bytes,
    };
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.threads)
        .build()
        .context("cannot start the worker threads")?;

    let mut report = IngestReport {
        manifest: manifest_file.clone(),
        ..Default::default()
    };
    let mut seen_this_run: HashSet<String> = HashSet::new();
    let mut processed_origins: HashSet<String> = HashSet::new();
    let mut rejected: Vec<QuarantineEntry> = Vec::new();
    let mut exact_conflicts: Vec<(String, u8, String)> = Vec::new();
    let bar = progress::bar(plan.len() as u64, "ingest");

    plan.for_each_batch(cfg.parquet_batch_rows, |items| {
        let known = &index;
        let outcomes: Vec<Outcome> = pool.install(|| {
            items
                .into_par_iter()
                .map(|it| {
                    let o = process(it, known, &limits, root, &now);
                    bar.inc(1);
                    o
                })
                .collect()
        });
        for o in outcomes {
            report.scanned += 1;
            match o {
                Outcome::Rejected(q) => {
                    processed_origins.insert(q.origin.clone());
                    *report.quarantined.entry(q.reason.clone()).or_default() += 1;
                    rejected.push(q);
                }
                Outcome::Known { id, label, origin } => {
                    processed_origins.insert(origin.clone());
                    note_known(
                        &id,
                        label,
                        origin,
                        &rows,
                        &index,
                        &mut seen_this_run,
                        &mut report,
                        &mut exact_conflicts,
                    );
                }
                Outcome::New(row) => {
                    processed_origins.insert(row.origin.clone());
                    if index.contains_key(&row.id) {
                        // The same bytes twice within one batch.
                        let ManifestRow {
                            id, label, origin, ..
                        } = row;
                        note_known(
                            &id,
                            label,
                            origin,
                            &rows,
                            &index,
                            &mut seen_this_run,
                            &mut report,
                            &mut exact_conflicts,
                        );
                    } else {
                        seen_this_run.insert(row.id.clone());
                        index.insert(row.id.clone(), rows.len());
                        rows.push(row);
                    }
                }
            }
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    report.added = rows.len() - n_existing;

    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    quarantine::update_quarantine(&dir.join(QUARANTINE_FILE), &processed_origins, &rejected)?;
    if report.quarantined_total() == report.scanned {
        anyhow::bail!(
            "all {} inputs were quarantined; see {} for the reasons",
            report.scanned,
            dir.join(QUARANTINE_FILE).display()
        );
    }

    // Groups and splits for the new rows; existing rows are never changed.
    let (old, new) = rows.split_at(n_existing);
    let existing: Vec<neardup::ExistingMember> = old
        .iter()
        .map(|r| neardup::ExistingMember {
            id: &r.id,
            phash: r.phash,
            group: &r.group,
            split: r.split,
            key: r.group_key.as_deref(),
        })
        .collect();
    let fresh: Vec<neardup::NewMember> = new
        .iter()
        .map(|r| neardup::NewMember {
            id: &r.id,
            phash: r.phash,
            key: r.group_key.as_deref(),
            parent: r.parent.as_deref(),
        })
        .collect();
    // Parents of image-to-image children that are not in this manifest: in another dataset's.
    let wanted: HashSet<&str> = new
        .iter()
        .filter_map(|r| r.parent.as_deref())
        .filter(|p| !index.contains_key(*p))
        .collect();
    let found = find_parents(root, &opts.name, &wanted)?;
    let external: neardup::ExternalParents = found
        .iter()
        .map(|(id, (g, s))| (id.as_str(), (g.as_str(), *s)))
        .collect();
    report.parents_here = new
        .iter()
        .filter(|r| r.parent.as_deref().is_some_and(|p| index.contains_key(p)))
        .count();
    report.parents_elsewhere = new
        .iter()
        .filter(|r| r.parent.as_deref().is_some_and(|p| found.contains_key(p)))
        .count();
    report.parents_missing = new
        .iter()
        .filter(|r| {
            r.parent
                .as_deref()
                .is_some_and(|p| !index.contains_key(p) && !found.contains_key(p))
        })
        .count();
    let grouping = neardup::assign_groups(
        &existing,
        &fresh,
        cfg.near_dup_radius,
        &opts.split,
        &external,
    );
    drop(existing);
    drop(fresh);
    for (row, a) in rows[n_existing..].iter_mut().zip(grouping.assignments) {
        row.group = a.group;
        row.split = a.split;
    }
    report.joined_existing_groups = grouping.joined_existing;
    report.bridges = grouping.bridges;

    if report.added > 0 {
        write_manifest(&manifest_file, &rows)?;
    }
    summarize(&rows, &index, &exact_conflicts, &mut report);
    write_conflicts(&dir.join(CONFLICTS_FILE), &report.conflicts)?;
    if !report.bridges.is_empty() {
        write_bridges(&dir.join(BRIDGES_FILE), &report.bridges)?;
    }
    Ok(report)
}

/// Group and split of the images with the ids in `wanted`, from every other dataset's manifest
/// under `root` (sorted by name; the first hit wins).
fn find_parents(
    root: &Path,
    own: &str,
    wanted: &HashSet<&str>,
) -> Result<HashMap<String, (String, Split)>> {
    let mut found = HashMap::new();
    if wanted.is_empty() {
        return Ok(found);
    }
    let mut names: Vec<String> = match fs::read_dir(root) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n != own && !n.starts_with('.'))
            .filter(|n| root.join(n).join(MANIFEST_FILE).is_file())
            .collect(),
        Err(_) => return Ok(found),
    };
    names.sort();
    for n in names {
        let path = root.join(&n).join(MANIFEST_FILE);
        let rows = read_manifest(&path)
            .with_context(|| format!("looking for i2i parents in {}", path.display()))?;
        for r in rows {
            if wanted.contains(r.id.as_str()) && !found.contains_key(&r.id) {
                found.insert(r.id, (r.group, r.split));
            }
        }
        if found.len() == wanted.len() {
            break;
        }
    }
    Ok(found)
}

#[allow(clippy::too_many_arguments)]
fn note_known(
    id: &str,
    label: u8,
    origin: String,
    rows: &[ManifestRow],
    index: &HashMap<String, usize>,
    seen_this_run: &mut HashSet<String>,
    report: &mut IngestReport,
    exact_conflicts: &mut Vec<(String, u8, String)>,
) {
    if seen_this_run.insert(id.to_string()) {
        report.already_present += 1;
    } else {
        report.duplicates_merged += 1;
    }
    if let Some(&i) = index.get(id) {
        if rows[i].label != label {
            exact_conflicts.push((id.to_string(), label, origin));
        }
    }
}

/// Reads, hashes and (for unknown content) decodes one input.
fn process(
    it: InputItem,
    known: &HashMap<String, usize>,
    limits: &DecodeLimits,
    root: &Path,
    now: &str,
) -> Outcome {
    let InputItem {
        origin,
        payload,
        label,
        source,
        generator,
        group_key,
        parent,
    } = it;
    let reject = |r: Rejection| {
        Outcome::Rejected(QuarantineEntry {
            origin: origin.clone(),
            reason: r.reason.code().to_string(),
            detail: r.detail,
            label,
            source: source.as_str().to_string(),
            generator: generator.clone(),
        })
    };
    let (bytes, in_place) = match payload {
        Payload::File(p) => match read_limited(&p, limits) {
            Ok(b) => (b, Some(p)),
            Err(r) => return reject(r),
        },
        Payload::Bytes(None) => {
            return reject(Rejection::new(Reason::EmptyFile, "the image cell is null"))
        }
        Payload::Bytes(Some(b)) => (b, None),
    };
    if let Err(r) = decode::check_len(bytes.len() as u64, limits) {
        return reject(r);
    }
    let id = content_hash(&bytes);
    if known.contains_key(&id) {
        return Outcome::Known { id, label, origin };
    }
    // A decoder bug on a hostile file must cost one image, not the whole run.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        decode::analyze(&bytes, limits)
    }));
    let info = match decoded {
        Ok(Ok(i)) => i,
        Ok(Err(r)) => return reject(r),
        Err(_) => return reject(Rejection::new(Reason::Corrupt, "the image decoder crashed")),
    };
    let path = match in_place {
        Some(p) => p.display().to_string(),
        None => match store_bytes(root, &id, info.ext, &bytes) {
            Ok(rel) => rel,
            Err(e) => {
                return reject(Rejection::new(
                    Reason::ReadError,
                    format!("cannot write to the image store: {e:#}"),
                ))
            }
        },
    };
    Outcome::New(ManifestRow {
        id,
        path,
        label,
        source,
        generator,
        width: info.width,
        height: info.height,
        format: info.format.to_string(),
        split: Split::Train,
        phash: info.phash,
        group: String::new(),
        ingested_at: now.to_string(),
        origin,
        variant_of: None,
        aug: None,
        group_key,
        parent,
    })
}

/// Reads a file after checking its size, so an oversized file is never loaded.
fn read_limited(p: &Path, limits: &DecodeLimits) -> Result<Vec<u8>, Rejection> {
    let io_reject = |e: std::io::Error| {
        if e.kind() == ErrorKind::NotFound {
            Rejection::new(Reason::MissingFile, "no such file")
        } else {
            Rejection::new(Reason::ReadError, e.to_string())
        }
    };
    let meta = fs::metadata(p).map_err(io_reject)?;
    if !meta.is_file() {
        return Err(Rejection::new(Reason::ReadError, "not a regular file"));
    }
    decode::check_len(meta.len(), limits)?;
    fs::read(p).map_err(io_reject)
}

/// Store path of an image, relative to the datasets root.
pub fn store_rel_path(id: &str, ext: &str) -> String {
    format!("{STORE_DIR}/{}/{id}.{ext}", &id[..2.min(id.len())])
}

/// Writes `bytes` into the content-addressed store unless that content is already there; returns
/// the path relative to the datasets root.
pub fn store_bytes(root: &Path, id: &str, ext: &str, bytes: &[u8]) -> Result<String> {
    let rel = store_rel_path(id, ext);
    let full = root.join(&rel);
    let fresh = match fs::metadata(&full) {
        Ok(m) => m.len() != bytes.len() as u64,
        Err(_) => true,
    };
    if fresh {
        fsx::write_atomic(&full, bytes)?;
    }
    Ok(rel)
}

fn summarize(
    rows: &[ManifestRow],
    index: &HashMap<String, usize>,
    exact_conflicts: &[(String, u8, String)],
    report: &mut IngestReport,
) {
    report.total_rows = rows.len();
    report.keyed_rows = rows.iter().filter(|r| r.group_key.is_some()).count();
    let mut split_groups: [HashSet<&str>; 3] = Default::default();
    for r in rows {
        split_groups[r.split as usize].insert(&r.group);
    }
    report.groups_per_split = split_groups.map(|g| g.len());
    let mut groups: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        *report
            .counts
            .entry((r.label, r.source, r.split))
            .or_default() += 1;
        groups.entry(&r.group).or_default().push(i);
    }
    let mut conflicts = Vec::new();
    let mut sorted: Vec<(&str, Vec<usize>)> = groups.into_iter().collect();
    sorted.sort();
    for (g, members) in &sorted {
        if members.len() > 1 {
            report.near_dup_groups += 1;
            report.near_dup_images += members.len();
        }
        let first = rows[members[0]].label;
        if members.iter().any(|&i| rows[i].label != first) {
            report.label_conflict_groups += 1;
            for &i in members {
                let r = &rows[i];
                conflicts.push(ConflictRow {
                    kind: "near_duplicate".into(),
                    group: g.to_string(),
                    split: r.split.to_string(),
                    id: r.id.clone(),
                    label: r.label,
                    origin: r.origin.clone(),
                });
            }
        }
    }
    for (id, label, origin) in exact_conflicts {
        if let Some(&i) = index.get(id) {
            let kept = &rows[i];
            for (l, o) in [(kept.label, &kept.origin), (*label, origin)] {
                conflicts.push(ConflictRow {
                    kind: "exact_duplicate".into(),
                    group: kept.group.clone(),
                    split: kept.split.to_string(),
                    id: id.clone(),
                    label: l,
                    origin: o.clone(),
                });
            }
        }
    }
    conflicts.dedup();
    report.conflicts = conflicts;
}

fn write_conflicts(path: &Path, conflicts: &[ConflictRow]) -> Result<()> {
    fsx::write_atomic_with(path, |w| {
        let mut cw = csv::Writer::from_writer(w);
        if conflicts.is_empty() {
            cw.write_record(["kind", "group", "split", "id", "label", "origin"])?;
        }
        for c in conflicts {
            cw.serialize(c)?;
        }
        cw.flush()?;
        Ok(())
    })
}

fn write_bridges(path: &Path, bridges: &[Bridge]) -> Result<()> {
    fsx::write_atomic_with(path, |w| {
        let mut cw = csv::Writer::from_writer(w);
        cw.write_record(["joined_group", "touched_groups", "new_ids"])?;
        for b in bridges {
            cw.write_record([
                b.joined.as_str(),
                &b.touched.join(" "),
                &b.members.join(" "),
            ])?;
        }
        cw.flush()?;
        Ok(())
    })
}

/// The closing table: rows per label × source × split, then the run's counts.
pub fn format_report(r: &IngestReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "manifest: {} ({} rows)",
        r.manifest.display(),
        r.total_rows
    );
    let _ = writeln!(
        s,
        "{:<10} {:<10} {:>8} {:>8} {:>8} {:>8}",
        "label", "source", "train", "val", "test", "total"
    );
    let mut keys: Vec<(u8, SourceKind)> = r.counts.keys().map(|k| (k.0, k.1)).collect();
    keys.sort();
    keys.dedup();
    let mut totals = [0usize; 4];
    for (label, source) in keys {
        let c: Vec<usize> = Split::ALL
            .iter()
            .map(|sp| r.counts.get(&(label, source, *sp)).copied().unwrap_or(0))
            .collect();
        let t: usize = c.iter().sum();
        for (k, v) in c.iter().chain([&t]).enumerate() {
            totals[k] += v;
        }
        let name = if label == 1 { "roadwork" } else { "none" };
        let _ = writeln!(
            s,
            "{name:<10} {:<10} {:>8} {:>8} {:>8} {:>8}",
            source.as_str(),
            c[0],
            c[1],
            c[2],
            t
        );
    }
    let _ = writeln!(
        s,
        "{:<10} {:<10} {:>8} {:>8} {:>8} {:>8}",
        "all", "", totals[0], totals[1], totals[2], totals[3]
    );
    let g = r.groups_per_split;
    let _ = writeln!(
        s,
        "{:<10} {:<10} {:>8} {:>8} {:>8} {:>8}",
        "groups",
        "",
        g[0],
        g[1],
        g[2],
        g.iter().sum::<usize>()
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "scanned               {}", r.scanned);
    let _ = writeln!(s, "added                 {}", r.added);
    let _ = writeln!(s, "already present       {}", r.already_present);
    let _ = writeln!(s, "duplicates merged     {}", r.duplicates_merged);
    let _ = writeln!(
        s,
        "near-dup groups       {} ({} images)",
        r.near_dup_groups, r.near_dup_images
    );
    let _ = writeln!(s, "joined earlier groups {}", r.joined_existing_groups);
    if r.keyed_rows > 0 {
        let _ = writeln!(s, "rows with a group key {}", r.keyed_rows);
    }
    if r.parents_here + r.parents_elsewhere + r.parents_missing > 0 {
        let _ = writeln!(
            s,
            "i2i children          {} with their parent's group ({} parents in other datasets), {} parents not found (grouped by pHash)",
            r.parents_here + r.parents_elsewhere,
            r.parents_elsewhere,
            r.parents_missing
        );
    }
    if !r.bridges.is_empty() {
        let _ = writeln!(
            s,
            "group bridges         {} (see {BRIDGES_FILE})",
            r.bridges.len()
        );
    }
    let exact = r
        .conflicts
        .iter()
        .filter(|c| c.kind == "exact_duplicate")
        .count()
        / 2;
    let _ = writeln!(
        s,
        "label conflicts       {} groups, {} exact duplicates (see {CONFLICTS_FILE})",
        r.label_conflict_groups, exact
    );
    let _ = writeln!(s, "quarantined           {}", r.quarantined_total());
    for (reason, n) in &r.quarantined {
        let _ = writeln!(s, "  {reason:<20}{n}");
    }
    if !r.conflicts.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<15} {:<16} {:<6} {:<16} {:>5}  origin",
            "conflict", "group", "split", "id", "label"
        );
        for c in r.conflicts.iter().take(20) {
            let _ = writeln!(
                s,
                "{:<15} {:<16} {:<6} {:<16} {:>5}  {}",
                c.kind,
                c.group,
                c.split,
                &c.id[..16.min(c.id.len())],
                c.label,
                c.origin
            );
        }
        if r.conflicts.len() > 20 {
            let _ = writeln!(s, "... {} more in {CONFLICTS_FILE}", r.conflicts.len() - 20);
        }
    }
    s
}
