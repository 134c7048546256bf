//! `sv72 ingest` end to end: every source kind, deduplication, near-duplicate groups, splits,
//! incremental re-ingest, quarantine reasons, EXIF orientation and input errors.
//!
//! All inputs are generated here (no Python, no network).

use std::fs;
use std::io::Cursor;
use std::path::Path;
use std::process::Command;

use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sv72::config::{IngestConfig, SplitConfig};
use sv72::data::ingest::{ingest, IngestOptions, IngestReport};
use sv72::data::manifest::{manifest_path, read_manifest, ManifestRow, SourceKind, Split};
use sv72::data::quarantine::read_quarantine;
use sv72::data::sources::{SourceSpec, Tag};

/// A synthetic "road scene": blobs on a seeded sinusoidal background.
fn scene(seed: u64, w: u32, h: u32) -> RgbImage {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let blobs: Vec<(f64, f64, f64, [u8; 3])> = (0..6)
        .map(|_| {
            (
                rng.random_range(0.0..w as f64),
                rng.random_range(0.0..h as f64),
                rng.random_range(6.0..(w.min(h) as f64 / 2.5)),
                [rng.random(), rng.random(), rng.random()],
            )
        })
        .collect();
    let fx = rng.random_range(4.0..30.0);
    let fy = rng.random_range(4.0..30.0);
    RgbImage::from_fn(w, h, |x, y| {
        let (xf, yf) = (x as f64, y as f64);
        for (cx, cy, r, c) in &blobs {
            if (xf - cx).powi(2) + (yf - cy).powi(2) < r * r {
                return Rgb(*c);
            }
        }
        let v = (127.0 + 100.0 * (xf / fx).sin() * (yf / fy).cos()) as u8;
        Rgb([v, v / 2, 255 - v])
    })
}

fn noisy(img: &RgbImage, amp: i32, seed: u64) -> RgbImage {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = img.clone();
    for p in out.pixels_mut() {
        for c in p.0.iter_mut() {
            *c = (*c as i32 + rng.random_range(-amp..=amp)).clamp(0, 255) as u8;
        }
    }
    out
}

fn encode(img: &RgbImage, fmt: ImageFormat) -> Vec<u8> {
    let mut buf = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img.clone())
        .write_to(&mut buf, fmt)
        .unwrap();
    buf.into_inner()
}

fn jpeg(seed: u64) -> Vec<u8> {
    encode(&scene(seed, 96, 72), ImageFormat::Jpeg)
}

fn put(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

fn opts(root: &Path, name: &str) -> IngestOptions {
    IngestOptions {
        datasets_root: root.to_path_buf(),
        name: name.into(),
        ingest: IngestConfig {
            threads: 2,
            parquet_batch_rows: 7, // several batches even in small tests
            ..Default::default()
        },
        split: SplitConfig::default(),
        tag: Tag {
            source: Some(SourceKind::Real),
            generator: Some("natix".into()),
        },
    }
}

fn folders(dirs: &[&Path]) -> SourceSpec {
    SourceSpec {
        folders: dirs.iter().map(|d| d.to_path_buf()).collect(),
        ..Default::default()
    }
}

fn rows_of(report: &IngestReport) -> Vec<ManifestRow> {
    read_manifest(&report.manifest).unwrap()
}

fn by_origin<'a>(rows: &'a [ManifestRow], suffix: &str) -> &'a ManifestRow {
    rows.iter()
        .find(|r| r.origin.ends_with(suffix))
        .unwrap_or_else(|| panic!("no row from {suffix}"))
}

fn sv72() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sv72"));
    c.env("SV72_NO_PROGRESS", "1");
    c
}

/// Writes a Hugging Face style Parquet file: `image: struct{bytes, path}`, `label: i64`.
fn write_hf_parquet(path: &Path, images: &[Vec<u8>], labels: &[i64], label_col: &str) {
    use polars::prelude::*;
    let n = images.len();
    let bytes: Vec<&[u8]> = images.iter().map(|b| b.as_slice()).collect();
    let names: Vec<String> = (0..n).map(|i| format!("img_{i}.jpg")).collect();
    let fields = [
        Series::new("bytes".into(), bytes),
        Series::new("path".into(), names),
    ];
    let image = StructChunked::from_series("image".into(), n, fields.iter())
        .unwrap()
        .into_series()
        .into_column();
    let label = Column::new(label_col.into(), labels.to_vec());
    let extra = Column::new("scene".into(), vec!["road"; n]);
    let mut df = DataFrame::new(n, vec![image, label, extra]).unwrap();
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let f = fs::File::create(path).unwrap();
    ParquetWriter::new(f).finish(&mut df).unwrap();
}

#[test]
fn folder_source_via_cli() {
    let t = tempfile::tempdir().unwrap();
    let raw = t.path().join("raw");
    put(&raw.join("roadwork/a.jpg"), &jpeg(1));
    put(
        &raw.join("roadwork/deeper/b.png"),
        &encode(&scene(2, 80, 60), ImageFormat::Png),
    );
    put(&raw.join("none/c.jpg"), &jpeg(3));
    put(&raw.join("none/.hidden.jpg"), b"ignored");
    let root = t.path().join("datasets");
    let out = sv72()
        .args(["--set", &format!("paths.datasets={}", root.display())])
        .args(["ingest", "--name", "real", "--folder"])
        .arg(&raw)
        .args(["--source", "real", "--generator", "natix"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("roadwork") && stdout.contains("quarantined"));
    let rows = read_manifest(&manifest_path(&root, "real")).unwrap();
    assert_eq!(rows.len(), 3);
    let b = by_origin(&rows, "b.png");
    assert_eq!((b.label, b.width, b.height), (1, 80, 60));
    assert_eq!(b.format, "png");
    assert!(Path::new(&b.path).is_absolute() && Path::new(&b.path).exists());
    let c = by_origin(&rows, "c.jpg");
    assert_eq!(
        (c.label, c.source, c.generator.as_str()),
        (0, SourceKind::Real, "natix")
    );
    assert_eq!(c.id, blake3::hash(&jpeg(3)).to_hex().to_string());
    assert!(!c.group.is_empty() && !c.ingested_at.is_empty());
    // A folder without class folders is an error naming the expected names.
    let err = sv72()
        .args(["--set", &format!("paths.datasets={}", root.display())])
        .args([
            "ingest",
            "--name",
            "x",
            "--source",
            "real",
            "--generator",
            "g",
        ])
        .arg("--folder")
        .arg(raw.join("none"))
        .output()
        .unwrap();
    assert_eq!(err.status.code(), Some(1));
    let e = String::from_utf8_lossy(&err.stderr);
    assert!(e.contains("roadwork") && e.contains("none"), "{e}");
}

#[test]
fn parquet_source_uses_content_store_once() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("datasets");
    let imgs: Vec<Vec<u8>> = (10..20).map(jpeg).collect();
    let labels: Vec<i64> = (0..10).map(|i| i % 2).collect();
    write_hf_parquet(
        &t.path().join("hf/train-00000.parquet"),
        &imgs,
        &labels,
        "label",
    );
    // Second shard repeats two images: stored once, counted as duplicates.
    write_hf_parquet(
        &t.path().join("hf/train-00001.parquet"),
        &[imgs[0].clone(), imgs[1].clone(), jpeg(30)],
        &[0, 1, 1],
        "label",
    );
    let spec = SourceSpec {
        parquets: vec![format!("{}/hf/train-*.parquet", t.path().display())],
        ..Default::default()
    };
    let mut o = opts(&root, "natix");
    o.tag.source = Some(SourceKind::Synthetic);
    let report = ingest(&spec, &o).unwrap();
    assert_eq!(report.scanned, 13);
    assert_eq!(report.added, 11);
    assert_eq!(report.duplicates_merged, 2);
    let rows = rows_of(&report);
    for (i, r) in rows.iter().take(10).enumerate() {
        assert_eq!(r.label as i64, labels[i]);
        assert!(
            r.origin.ends_with(&format!("train-00000.parquet#{i}")),
            "{}",
            r.origin
        );
        assert_eq!(r.path, format!("store/{}/{}.jpg", &r.id[..2], r.id));
        assert_eq!(fs::read(r.resolve_path(&root)).unwrap(), imgs[i]);
        assert_eq!(r.source, SourceKind::Synthetic);
    }
    let stored = walk_count(&root.join("store"));
    assert_eq!(stored, 11);
    // Same images into another dataset: the store does not grow.
    ingest(&spec, &opts(&root, "natix-copy")).unwrap();
    assert_eq!(walk_count(&root.join("store")), 11);
}

fn walk_count(dir: &Path) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk_count(&p)
            } else {
                1
            }
        })
        .sum()
}

#[test]
fn csv_source_with_overrides_and_missing_file() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    put(&data.join("imgs/a.jpg"), &jpeg(40));
    put(&data.join("imgs/b.jpg"), &jpeg(41));
    let abs = t.path().join("elsewhere/c.jpg");
    put(&abs, &jpeg(42));
    let csv = format!(
        "path,label,source,generator\nimgs/a.jpg,1,,\nimgs/b.jpg,none,synthetic,sdxl-t2i\n{},0,real,\nimgs/gone.jpg,1,,\n",
        abs.display()
    );
    put(&data.join("list.csv"), csv.as_bytes());
    let spec = SourceSpec {
        csvs: vec![data.join("list.csv")],
        ..Default::default()
    };
    let root = t.path().join("datasets");
    let report = ingest(&spec, &opts(&root, "csv")).unwrap();
    assert_eq!(report.added, 3);
    let rows = rows_of(&report);
    let a = by_origin(&rows, "a.jpg");
    assert_eq!(
        (a.label, a.source, a.generator.as_str()),
        (1, SourceKind::Real, "natix")
    );
    let b = by_origin(&rows, "b.jpg");
    assert_eq!(
        (b.label, b.source, b.generator.as_str()),
        (0, SourceKind::Synthetic, "sdxl-t2i")
    );
    assert_eq!(by_origin(&rows, "c.jpg").label, 0);
    let q = read_quarantine(&root.join("csv/quarantine.csv")).unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].reason, "missing_file");
    assert!(q[0].origin.ends_with("gone.jpg"));
}

#[test]
fn exact_duplicates_are_merged_and_conflicting_labels_reported() {
    let t = tempfile::tempdir().unwrap();
    let raw = t.path().join("raw");
    put(&raw.join("roadwork/a.jpg"), &jpeg(50));
    put(&raw.join("roadwork/a_copy.jpg"), &jpeg(50));
    put(&raw.join("none/a_again.jpg"), &jpeg(50));
    put(&raw.join("none/b.jpg"), &jpeg(51));
    let root = t.path().join("datasets");
    let report = ingest(&folders(&[&raw]), &opts(&root, "d")).unwrap();
    assert_eq!(report.added, 2);
    assert_eq!(report.duplicates_merged, 2);
    // Same bytes under roadwork/ and none/: an exact-duplicate label conflict.
    let text = fs::read_to_string(root.join("d/label_conflicts.csv")).unwrap();
    assert!(
        text.contains("exact_duplicate") && text.contains("a_again.jpg"),
        "{text}"
    );
}

#[test]
fn near_duplicates_share_group_and_split_and_label_conflicts_are_listed() {
    let t = tempfile::tempdir().unwrap();
    let raw = t.path().join("raw");
    let base = scene(60, 160, 120);
    put(
        &raw.join("roadwork/base.png"),
        &encode(&base, ImageFormat::Png),
    );
    // Noise + lossy re-encode: different bytes, same picture.
    put(
        &raw.join("roadwork/copy.jpg"),
        &encode(&noisy(&base, 10, 1), ImageFormat::Jpeg),
    );
    // The same picture again, labelled the other way.
    put(
        &raw.join("none/copy2.jpg"),
        &encode(&noisy(&base, 8, 2), ImageFormat::Jpeg),
    );
    for s in 61..70 {
        put(&raw.join(format!("none/other{s}.jpg")), &jpeg(s));
    }
    let root = t.path().join("datasets");
    let report = ingest(&folders(&[&raw]), &opts(&root, "nd")).unwrap();
    let rows = rows_of(&report);
    assert_eq!(rows.len(), 12);
    let (b, c, c2) = (
        by_origin(&rows, "base.png"),
        by_origin(&rows, "copy.jpg"),
        by_origin(&rows, "copy2.jpg"),
    );
    assert_ne!(b.id, c.id);
    assert_eq!(b.group, c.group);
    assert_eq!(b.group, c2.group);
    assert_eq!(b.split, c.split);
    assert_eq!(report.near_dup_groups, 1);
    assert_eq!(report.near_dup_images, 3);
    let others: std::collections::HashSet<&str> = rows
        .iter()
        .filter(|r| r.origin.contains("other"))
        .map(|r| r.group.as_str())
        .collect();
    assert_eq!(others.len(), 9, "distinct scenes were merged");
    assert_eq!(report.label_conflict_groups, 1);
    let mut rdr = csv::Reader::from_path(root.join("nd/label_conflicts.csv")).unwrap();
    let lines: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert!(lines
        .iter()
        .all(|l| &l[0] == "near_duplicate" && l[1] == *b.group));
}

#[test]
fn incremental_reingest_keeps_assignments_and_is_idempotent() {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a");
    for s in 100..140 {
        let class = if s % 2 == 0 { "roadwork" } else { "none" };
        put(&a.join(format!("{class}/{s}.jpg")), &jpeg(s));
    }
    let root = t.path().join("datasets");
    let first = ingest(&folders(&[&a]), &opts(&root, "inc")).unwrap();
    let before = rows_of(&first);
    assert_eq!(before.len(), 40);

    // New data, including a near duplicate of an image from the first run.
    let b = t.path().join("b");
    for s in 200..230 {
        put(&b.join(format!("roadwork/{s}.jpg")), &jpeg(s));
    }
    let target = scene(117, 96, 72);
    put(
        &b.join("none/near117.png"),
        &encode(&noisy(&target, 6, 3), ImageFormat::Png),
    );
    let second = ingest(&folders(&[&a, &b]), &opts(&root, "inc")).unwrap();
    assert_eq!(second.added, 31);
    assert_eq!(second.already_present, 40);
    let after = rows_of(&second);
    assert_eq!(&after[..40], &before[..], "earlier rows changed");
    let orig = by_origin(&after, "/117.jpg");
    let near = by_origin(&after, "near117.png");
    assert_eq!(
        (near.group.as_str(), near.split),
        (orig.group.as_str(), orig.split)
    );
    assert!(second.joined_existing_groups >= 1);

    // Same inputs again: nothing added, manifest untouched byte for byte.
    let bytes = fs::read(&second.manifest).unwrap();
    let third = ingest(&folders(&[&a, &b]), &opts(&root, "inc")).unwrap();
    assert_eq!(third.added, 0);
    assert_eq!(third.already_present, 71);
    assert_eq!(fs::read(&third.manifest).unwrap(), bytes);
    // Input order does not matter either.
    let fourth = ingest(&folders(&[&b, &a]), &opts(&root, "inc")).unwrap();
    assert_eq!(fourth.added, 0);
    assert_eq!(fs::read(&fourth.manifest).unwrap(), bytes);
}

#[test]
fn every_quarantine_reason_is_recorded_and_ingest_goes_on() {
    let t = tempfile::tempdir().unwrap();
    let raw = t.path().join("raw");
    let good = jpeg(300);
    put(&raw.join("roadwork/good.jpg"), &good);
    put(&raw.join("none/good2.jpg"), &jpeg(301));
    let mut corrupt = good[..20].to_vec();
    corrupt.extend(std::iter::repeat_n(0x33u8, 3000));
    corrupt.extend([0xFF, 0xD9]);
    put(&raw.join("roadwork/corrupt.jpg"), &corrupt);
    put(
        &raw.join("roadwork/truncated.jpg"),
        &good[..good.len() * 2 / 3],
    );
    put(&raw.join("none/text.jpg"), b"this is not an image at all\n");
    put(&raw.join("none/empty.jpg"), b"");
    // 1000x1000 flat PNG: a small file but 1M pixels.
    let flat = RgbImage::from_pixel(1000, 1000, Rgb([90, 90, 90]));
    put(&raw.join("none/huge.png"), &encode(&flat, ImageFormat::Png));
    // Noise compresses badly: a big file with few pixels.
    let noise = noisy(&RgbImage::new(200, 200), 127, 5);
    let big = encode(&noise, ImageFormat::Png);
    assert!(big.len() > 60_000);
    put(&raw.join("none/big.png"), &big);
    let root = t.path().join("datasets");
    let mut o = opts(&root, "q");
    o.ingest.max_pixels = 500_000;
    o.ingest.max_file_bytes = 60_000;
    let report = ingest(&folders(&[&raw]), &o).unwrap();
    assert_eq!(report.added, 2);
    let q = read_quarantine(&root.join("q/quarantine.csv")).unwrap();
    let reason = |name: &str| {
        q.iter()
            .find(|e| e.origin.ends_with(name))
            .map(|e| e.reason.as_str())
            .unwrap_or("<not quarantined>")
    };
    assert_eq!(reason("corrupt.jpg"), "corrupt");
    assert_eq!(reason("truncated.jpg"), "truncated");
    assert_eq!(reason("text.jpg"), "unsupported_format");
    assert_eq!(reason("empty.jpg"), "empty_file");
    assert_eq!(reason("huge.png"), "over_max_pixels");
    assert_eq!(reason("big.png"), "over_max_file_bytes");
    assert_eq!(q.len(), 6);
    assert_eq!(report.quarantined_total(), 6);
    // Re-running does not duplicate quarantine lines.
    ingest(&folders(&[&raw]), &o).unwrap();
    assert_eq!(
        read_quarantine(&root.join("q/quarantine.csv"))
            .unwrap()
            .len(),
        6
    );

    // When every input fails, ingest fails (and says where to look).
    let bad = t.path().join("bad");
    put(&bad.join("roadwork/x.jpg"), b"nope");
    let err = ingest(&folders(&[&bad]), &opts(&root, "allbad")).unwrap_err();
    assert!(format!("{err:#}").contains("quarantine.csv"), "{err:#}");
}

#[test]
fn missing_columns_and_bad_labels_name_file_and_column() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("datasets");
    let err_of = |spec: SourceSpec| format!("{:#}", ingest(&spec, &opts(&root, "e")).unwrap_err());
    let pq = |name: &str| SourceSpec {
        parquets: vec![t.path().join(name).display().to_string()],
        ..Default::default()
    };
    write_hf_parquet(
        &t.path().join("nolabel.parquet"),
        &[jpeg(1)],
        &[1],
        "target",
    );
    let e = err_of(pq("nolabel.parquet"));
    assert!(
        e.contains("nolabel.parquet") && e.contains("`label`"),
        "{e}"
    );
    write_hf_parquet(
        &t.path().join("badlabel.parquet"),
        &[jpeg(1), jpeg(2)],
        &[1, 2],
        "label",
    );
    let e = err_of(pq("badlabel.parquet"));
    assert!(
        e.contains("badlabel.parquet") && e.contains("`label`") && e.contains("row 1"),
        "{e}"
    );

    put(&t.path().join("nolabel.csv"), b"path,class\na.jpg,1\n");
    let e = err_of(SourceSpec {
        csvs: vec![t.path().join("nolabel.csv")],
        ..Default::default()
    });
    assert!(e.contains("nolabel.csv") && e.contains("`label`"), "{e}");
    put(
        &t.path().join("badlabel.csv"),
        b"path,label\na.jpg,1\nb.jpg,maybe\n",
    );
    let e = err_of(SourceSpec {
        csvs: vec![t.path().join("badlabel.csv")],
        ..Default::default()
    });
    assert!(
        e.contains("badlabel.csv") && e.contains("`label`") && e.contains("line 3"),
        "{e}"
    );
    // Nothing was written for the failed runs.
    assert!(!root.join("e/manifest.parquet").exists());
}

#[test]
fn split_fractions_are_respected_over_hundreds_of_groups() {
    let t = tempfile::tempdir().unwrap();
    let raw = t.path().join("raw");
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for i in 0..300 {
        // Coarse random blocks: distinct, cheap images whose pHashes are far apart.
        let cells: Vec<u8> = (0..64).map(|_| rng.random()).collect();
        let img = RgbImage::from_fn(32, 32, |x, y| {
            let v = cells[(y / 4 * 8 + x / 4) as usize];
            Rgb([v, v, v])
        });
        let class = if i % 3 == 0 { "roadwork" } else { "none" };
        put(
            &raw.join(format!("{class}/{i}.png")),
            &encode(&img, ImageFormat::Png),
        );
    }
    let root = t.path().join("datasets");
    let report = ingest(&folders(&[&raw]), &opts(&root, "s")).unwrap();
    let rows = rows_of(&report);
    assert_eq!(rows.len(), 300);
    let groups: std::collections::HashSet<&str> = rows.iter().map(|r| r.group.as_str()).collect();
    assert!(groups.len() >= 290, "{} groups", groups.len());
    let frac = |s: Split| rows.iter().filter(|r| r.split == s).count() as f64 / 300.0;
    let (tr, va, te) = (frac(Split::Train), frac(Split::Val), frac(Split::Test));
    assert!((tr - 0.8).abs() < 0.08, "train {tr}");
    assert!((0.03..0.18).contains(&va), "val {va}");
    assert!((0.03..0.18).contains(&te), "test {te}");
}

/// Inserts an EXIF APP1 segment with the given orientation right after the JPEG SOI marker.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec();
    tiff.extend(1u16.to_be_bytes()); // one IFD entry
    tiff.extend(0x0112u16.to_be_bytes()); // Orientation
    tiff.extend(3u16.to_be_bytes()); // SHORT
    tiff.extend(1u32.to_be_bytes());
    tiff.extend(orientation.to_be_bytes());
    tiff.extend([0, 0]);
    tiff.extend(0u32.to_be_bytes()); // no next IFD
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend(tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend([0xFF, 0xE1]);
    out.extend(((payload.len() + 2) as u16).to_be_bytes());
    out.extend(payload);
    out.extend(&jpeg[2..]);
    out
}

#[test]
fn exif_orientation_is_applied() {
    let t = tempfile::tempdir().unwrap();
    let raw = t.path().join("raw");
    let stored = scene(400, 128, 64);
    // Orientation 6: the camera stored the picture rotated; viewers turn it 90° clockwise.
    let tagged = with_exif_orientation(&encode(&stored, ImageFormat::Jpeg), 6);
    put(&raw.join("roadwork/tagged.jpg"), &tagged);
    let upright = image::imageops::rotate90(&stored);
    put(
        &raw.join("none/upright.png"),
        &encode(&upright, ImageFormat::Png),
    );
    let raw_pixels = encode(&stored, ImageFormat::Png);
    put(&raw.join("none/unrotated.png"), &raw_pixels);
    let root = t.path().join("datasets");
    let mut o = opts(&root, "exif");
    o.ingest.near_dup_radius = 0;
    let rows = rows_of(&ingest(&folders(&[&raw]), &o).unwrap());
    let tagged_row = by_origin(&rows, "tagged.jpg");
    assert_eq!((tagged_row.width, tagged_row.height), (64, 128));
    let d = |a: u64, b: u64| (a ^ b).count_ones();
    let up = by_origin(&rows, "upright.png").phash;
    let un = by_origin(&rows, "unrotated.png").phash;
    assert!(
        d(tagged_row.phash, up) <= 4,
        "oriented hash far from upright: {}",
        d(tagged_row.phash, up)
    );
    assert!(
        d(tagged_row.phash, un) > 12,
        "hash ignores orientation: {}",
        d(tagged_row.phash, un)
    );
}

/// Like [`write_hf_parquet`], with an integer `video_id` column (the frame's video).
fn write_video_parquet(path: &Path, images: &[Vec<u8>], videos: &[i64]) {
    use polars::prelude::*;
    let n = images.len();
    let bytes: Vec<&[u8]> = images.iter().map(|b| b.as_slice()).collect();
    let names: Vec<String> = (0..n).map(|i| format!("frame_{i}.jpg")).collect();
    let fields = [
        Series::new("bytes".into(), bytes),
        Series::new("path".into(), names),
    ];
    let image = StructChunked::from_series("image".into(), n, fields.iter())
        .unwrap()
        .into_series()
        .into_column();
    let label = Column::new("label".into(), vec![1i64; n]);
    let video = Column::new("video_id".into(), videos.to_vec());
    let mut df = DataFrame::new(n, vec![image, label, video]).unwrap();
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    ParquetWriter::new(fs::File::create(path).unwrap())
        .finish(&mut df)
        .unwrap();
}

/// Each video's rows: (group, split) must be one value.
fn assert_videos_whole(
    rows: &[ManifestRow],
) -> std::collections::BTreeMap<String, (String, Split)> {
    let mut seen = std::collections::BTreeMap::new();
    for r in rows {
        let key = r.group_key.clone().expect("every frame has its video");
        let gs = (r.group.clone(), r.split);
        let first = seen.entry(key.clone()).or_insert_with(|| gs.clone());
        assert_eq!(*first, gs, "video {key} straddles groups or splits");
    }
    seen
}

#[test]
fn grouping_column_keeps_videos_whole_across_ingests() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("datasets");
    // 12 videos of 3 unrelated-looking frames each (no pHash links between them).
    let mut o = opts(&root, "frames");
    o.ingest.group_column = Some("video_id".into());
    o.split = SplitConfig {
        train: 0.34,
        val: 0.33,
        test: 0.33,
        salt: "videos".into(),
    };
    let frames: Vec<Vec<u8>> = (0..36).map(|i| jpeg(1000 + i)).collect();
    let videos: Vec<i64> = (0..36).map(|i| i / 3).collect();
    let pq = t.path().join("natix/train-0.parquet");
    write_video_parquet(&pq, &frames, &videos);
    let spec = |p: &Path| SourceSpec {
        parquets: vec![p.display().to_string()],
        ..Default::default()
    };
    let first = ingest(&spec(&pq), &o).unwrap();
    assert_eq!(first.added, 36);
    let rows = rows_of(&first);
    let groups = assert_videos_whole(&rows);
    assert_eq!(groups.len(), 12);
    assert!(groups.contains_key("video_id:0"));
    let splits: std::collections::BTreeSet<Split> = groups.values().map(|g| g.1).collect();
    assert!(splits.len() > 1, "all 12 videos in one split: {splits:?}");
    assert_eq!(first.groups_per_split.iter().sum::<usize>(), 12);
    let table = sv72::data::ingest::format_report(&first);
    let g = first.groups_per_split;
    let line = table.lines().find(|l| l.starts_with("groups")).unwrap();
    assert_eq!(
        line.split_whitespace().skip(1).collect::<Vec<_>>(),
        [g[0], g[1], g[2], 12].map(|v| v.to_string())
    );

    // A later ingest: more frames of the same videos plus a new one.
    let more: Vec<Vec<u8>> = (0..14).map(|i| jpeg(2000 + i)).collect();
    let more_videos: Vec<i64> = (0..14).map(|i| if i < 12 { i } else { 99 }).collect();
    let pq2 = t.path().join("natix/train-1.parquet");
    write_video_parquet(&pq2, &more, &more_videos);
    let second = ingest(&spec(&pq2), &o).unwrap();
    assert_eq!(second.added, 14);
    let after = rows_of(&second);
    assert_eq!(&after[..36], &rows[..], "earlier rows changed");
    let groups2 = assert_videos_whole(&after);
    for (k, v) in &groups {
        assert_eq!(&groups2[k], v, "video {k} moved");
    }
    assert_eq!(groups2.len(), 13);
    assert_eq!(second.joined_existing_groups, 12);

    // A missing grouping column is an error naming it.
    o.ingest.group_column = Some("clip".into());
    let err = format!("{:#}", ingest(&spec(&pq2), &o).unwrap_err());
    assert!(err.contains("clip") && err.contains("video_id"), "{err}");
}

#[test]
fn csv_group_column_and_parent_checks() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("in");
    let mut csv = String::from("path,label,group\n");
    for i in 0..8 {
        put(&dir.join(format!("{i}.jpg")), &jpeg(3000 + i));
        csv.push_str(&format!(
            "{i}.jpg,roadwork,{}\n",
            if i < 4 { "walk-a" } else { "" }
        ));
    }
    fs::write(dir.join("list.csv"), &csv).unwrap();
    let root = t.path().join("datasets");
    let spec = SourceSpec {
        csvs: vec![dir.join("list.csv")],
        ..Default::default()
    };
    let r = ingest(&spec, &opts(&root, "walks")).unwrap();
    let rows = rows_of(&r);
    let keyed: Vec<&ManifestRow> = rows.iter().filter(|r| r.group_key.is_some()).collect();
    assert_eq!(keyed.len(), 4);
    assert!(keyed
        .iter()
        .all(|k| k.group_key.as_deref() == Some("group:walk-a")));
    assert!(keyed.windows(2).all(|w| w[0].group == w[1].group));
    assert_eq!(r.keyed_rows, 4);

    // A `parent` that is not a content id is refused with the line and column.
    fs::write(dir.join("bad.csv"), "path,label,parent\n0.jpg,none,abc\n").unwrap();
    let spec = SourceSpec {
        csvs: vec![dir.join("bad.csv")],
        ..Default::default()
    };
    let err = format!("{:#}", ingest(&spec, &opts(&root, "walks2")).unwrap_err());
    assert!(err.contains("line 2") && err.contains("parent"), "{err}");
}
