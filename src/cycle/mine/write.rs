//! The mine-hard artifacts: manifest, labeller CSV, prompts, summary and contact sheet, written
//! into one folder that replaces the previous one only when complete.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};
use image::{imageops, Rgb, RgbImage};
use serde::Serialize;

use super::prompts::{Prompt, SceneAttrs};
use super::select::{said_roadwork, Case, Reason};
use crate::data::manifest::{write_manifest, ManifestRow};
use crate::util::{fsx, plot};

/// Manifest of the selected cases (read it with `data::manifest::read_manifest`).
pub const MANIFEST_FILE: &str = "hard_cases.parquet";
/// The labeller's sheet; `sv72 ingest --csv` reads it as it is.
pub const CSV_FILE: &str = "hard_cases.csv";
pub const PROMPTS_TXT: &str = "prompts.txt";
pub const PROMPTS_JSONL: &str = "prompts.jsonl";
pub const SUMMARY_MD: &str = "summary.md";
pub const SUMMARY_JSON: &str = "summary.json";
pub const CONTACT_SHEET: &str = "contact_sheet.png";

/// Side of one contact-sheet tile.
pub const TILE: u32 = 112;
const BORDER: u32 = 4;
const COLS: u32 = 8;

/// A selected case with everything written about it.
#[derive(Debug, Clone)]
pub struct Selected {
    pub case: Case,
    /// Its manifest row (label = the suggested label).
    pub row: ManifestRow,
    pub attrs: SceneAttrs,
    pub prompt: Prompt,
    /// A `TILE`-sized thumbnail for the contact sheet.
    pub thumb: RgbImage,
}

/// Counts and settings of one run (`summary.json`; `summary.md` renders it).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub created_at: String,
    /// One line per input read.
    pub inputs: Vec<String>,
    /// How cases were chosen among the candidates.
    pub selection: String,
    /// Hard images found (after merging answers of the same image).
    pub candidates: usize,
    pub selected: usize,
    pub max_cases: usize,
    /// Candidates and selected per reason (`[candidates, selected]`).
    pub by_reason: BTreeMap<String, [usize; 2]>,
    pub by_origin: BTreeMap<String, [usize; 2]>,
    /// By suggested label.
    pub by_label: BTreeMap<String, [usize; 2]>,
    /// What could not be mined, and how many.
    pub skipped: BTreeMap<String, usize>,
    pub notes: Vec<String>,
}

fn label_name(l: u8) -> &'static str {
    if l == 1 {
        "roadwork"
    } else {
        "none"
    }
}

/// Fills the per-reason, per-origin and per-label counts: `candidates` and `selected`.
pub fn count(summary: &mut Summary, candidates: &[Case], selected: &[Selected]) {
    let mut add = |c: &Case, slot: usize| {
        for r in &c.reasons {
            summary.by_reason.entry(r.as_str().into()).or_default()[slot] += 1;
        }
        summary
            .by_origin
            .entry(c.origin.as_str().into())
            .or_default()[slot] += 1;
        summary
            .by_label
            .entry(label_name(c.suggested_label()).into())
            .or_default()[slot] += 1;
    };
    for c in candidates {
        add(c, 0);
    }
    for s in selected {
        add(&s.case, 1);
    }
    summary.candidates = candidates.len();
    summary.selected = selected.len();
}

fn reasons_str(r: &[Reason]) -> String {
    r.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(";")
}

fn fmt_p(p: Option<f64>) -> String {
    p.map_or(String::new(), |p| format!("{p:.6}"))
}

/// The labeller CSV: `path,label,source,generator` first (what `sv72 ingest --csv` reads; the
/// other columns are ignored by it), then why each case is here. With `mine-hard --judge`,
/// `p_judge` and `judge_suggested_label` hold the VLM's opinion: a suggestion only, never put
/// in `label` or `known_label`.
pub fn csv_bytes(selected: &[Selected], datasets_root: &Path) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "path",
        "label",
        "source",
        "generator",
        "id",
        "found_in",
        "reasons",
        "p_a",
        "p_b",
        "known_label",
        "suggested_label",
        "level",
        "hardness",
        "p_judge",
        "judge_suggested_label",
    ])?;
    for s in selected {
        let c = &s.case;
        let path = s.row.resolve_path(datasets_root);
        let path = path.canonicalize().unwrap_or(path);
        let suggested = c.suggested_label();
        w.write_record([
            path.display().to_string(),
            suggested.to_string(),
            s.row.source.to_string(),
            s.row.generator.clone(),
            c.id.clone(),
            c.origin.as_str().into(),
            reasons_str(&c.reasons),
            format!("{:.6}", c.p_a),
            fmt_p(c.p_b),
            c.known_label.map_or(String::new(), |l| l.to_string()),
            suggested.to_string(),
            c.level.map_or(String::new(), |l| l.to_string()),
            format!("{:.4}", c.hardness),
            fmt_p(c.p_judge),
            c.p_judge
                .map_or(String::new(), |j| u8::from(said_roadwork(j)).to_string()),
        ])?;
    }
    w.into_inner().context("CSV encoding failed")
}

const ROADWORK: Rgb<u8> = Rgb([255, 140, 0]);
const NONE: Rgb<u8> = Rgb([40, 110, 255]);
const MISCLASSIFIED: Rgb<u8> = Rgb([230, 30, 30]);
const DISAGREE: Rgb<u8> = Rgb([250, 230, 40]);
/// Height of the legend strip under the grid, and the narrowest sheet that fits it.
pub const LEGEND_H: u32 = 46;
pub const MIN_SHEET_W: u32 = 480;

/// A grid of the selected images, hardest first: border orange for roadwork, blue for none; a
/// red corner marks a misclassified case, a yellow one a disagreement. A legend strip under the
/// grid says so.
pub fn contact_sheet(selected: &[Selected], max: usize) -> Result<RgbImage> {
    let n = selected.len().min(max.max(1)) as u32;
    let cols = n.clamp(1, COLS);
    let rows = n.div_ceil(cols).max(1);
    let cell = TILE + 2 * BORDER;
    let (w, grid_h) = ((cols * cell).max(MIN_SHEET_W), rows * cell);
    let mut sheet = RgbImage::from_pixel(w, grid_h + LEGEND_H, Rgb([24, 24, 24]));
    let fill = |sheet: &mut RgbImage, x0: u32, y0: u32, side: u32, c: Rgb<u8>| {
        for y in y0..y0 + side {
            for x in x0..x0 + side {
                sheet.put_pixel(x, y, c);
            }
        }
    };
    for (i, s) in selected.iter().take(n as usize).enumerate() {
        let (x0, y0) = ((i as u32 % cols) * cell, (i as u32 / cols) * cell);
        let colour = if s.case.suggested_label() == 1 {
            ROADWORK
        } else {
            NONE
        };
        fill(&mut sheet, x0, y0, cell, colour);
        let t = &s.thumb;
        let (dx, dy) = (
            (TILE - t.width().min(TILE)) / 2,
            (TILE - t.height().min(TILE)) / 2,
        );
        imageops::replace(
            &mut sheet,
            t,
            i64::from(x0 + BORDER + dx),
            i64::from(y0 + BORDER + dy),
        );
        let mark = if s.case.reasons.contains(&Reason::Misclassified) {
            Some(MISCLASSIFIED)
        } else if s.case.reasons.contains(&Reason::Disagreement)
            || s.case.reasons.contains(&Reason::JudgeDisagreement)
        {
            Some(DISAGREE)
        } else {
            None
        };
        if let Some(m) = mark {
            fill(&mut sheet, x0, y0, 12, m);
        }
    }
    let text = plot::font(13).color(&plot::RGBColor(230, 230, 230));
    let lines: [&[(Rgb<u8>, &str)]; 2] = [
        &[
            (ROADWORK, "roadwork"),
            (NONE, "none   (border: suggested label)"),
        ],
        &[
            (MISCLASSIFIED, "misclassified"),
            (DISAGREE, "models disagree   (corner)"),
        ],
    ];
    for (k, line) in lines.iter().enumerate() {
        let y = grid_h + 6 + k as u32 * 20;
        let mut x = 8;
        for (c, label) in line.iter() {
            fill(&mut sheet, x, y + 4, 12, *c);
            plot::draw_text(&mut sheet, label, x as i32 + 18, y as i32, &text)?;
            x += 18 + plot::text_width(label, &text)? + 16;
        }
    }
    Ok(sheet)
}

/// The Markdown summary.
pub fn render_summary(s: &Summary, out: &Path) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# sv72 mine-hard\n");
    let _ = writeln!(m, "- created: {}", s.created_at);
    for i in &s.inputs {
        let _ = writeln!(m, "- input: {i}");
    }
    let _ = writeln!(m, "- selection: {}", s.selection);
    let _ = writeln!(
        m,
        "- {} hard image(s) found, {} selected (max {})\n",
        s.candidates, s.selected, s.max_cases
    );
    for (title, map) in [
        ("reason", &s.by_reason),
        ("found in", &s.by_origin),
        ("suggested label", &s.by_label),
    ] {
        let _ = writeln!(m, "| {title} | candidates | selected |\n|---|---|---|");
        for (k, [c, sel]) in map {
            let _ = writeln!(m, "| {k} | {c} | {sel} |");
        }
        m.push('\n');
    }
    if !s.skipped.is_empty() {
        let _ = writeln!(m, "## Not mined\n");
        for (k, v) in &s.skipped {
            let _ = writeln!(m, "- {k}: {v}");
        }
        m.push('\n');
    }
    for n in &s.notes {
        let _ = writeln!(m, "> {n}\n");
    }
    let csv = out.join(CSV_FILE);
    let _ = writeln!(
        m,
        "## Labelling and re-ingest\n\n\
         `{CSV_FILE}` lists the cases hardest first. Its `label` column starts as the suggested \
         label (the known label for eval images, the model's answer for serve-log images); \
         correct it (`1`/`roadwork` or `0`/`none`), delete rows you do not want, and fix \
         `source` (`real`/`synthetic`) where you know it (validator images from the serve log \
         are written as `real`, generator `serve-log`). Then:\n\n\
         ```\nsv72 ingest --name hard-cases --csv {}\n```\n\n\
         Other columns (`id`, `found_in`, `reasons`, `p_a`, `p_b`, ...) are ignored by ingest. \
         `{MANIFEST_FILE}` is the same selection as a manifest with the suggested labels. \
         `{PROMPTS_TXT}` / `{PROMPTS_JSONL}` hold one generator prompt per case (with negative \
         prompt, target family, seed, the case's image and an image-to-image strength in the \
         JSON lines): `sv72 generate --prompts {} --out <DIR>` makes the images on an \
         image server, and `sv72 ingest --csv <DIR>/generated.csv` brings them back.\n\n\
         ![contact sheet]({CONTACT_SHEET})\n\n\
         Contact sheet: hardest first, colours explained in its legend.\n",
        csv.display(),
        out.display()
    );
    m
}

/// Refuses to replace a folder that is not a previous mine-hard output (a typo in `--out` must
/// not swap away someone's data).
pub fn check_out_dir(out: &Path) -> Result<()> {
    let Ok(mut entries) = std::fs::read_dir(out) else {
        return Ok(());
    };
    let empty = entries.next().is_none();
    let previous = out.join(SUMMARY_JSON).is_file() && out.join(CSV_FILE).is_file();
    if !empty && !previous {
        bail!(
            "--out {}: the folder exists and is not a previous mine-hard output; \
             give a new or empty folder",
            out.display()
        );
    }
    Ok(())
}

/// Writes every artifact into `out`, replacing a previous run's folder only once all are written.
pub fn write_outputs(
    out: &Path,
    selected: &[Selected],
    summary: &Summary,
    datasets_root: &Path,
    sheet_max: usize,
) -> Result<()> {
    check_out_dir(out)?;
    let rows: Vec<ManifestRow> = selected.iter().map(|s| s.row.clone()).collect();
    let csv = csv_bytes(selected, datasets_root)?;
    let mut txt = String::new();
    let mut jsonl = String::new();
    for s in selected {
        txt.push_str(&s.prompt.prompt.replace('\n', " "));
        txt.push('\n');
        jsonl.push_str(&serde_json::to_string(&s.prompt)?);
        jsonl.push('\n');
    }
    let mut png = Vec::new();
    contact_sheet(selected, sheet_max)?
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .context("PNG encoding of the contact sheet failed")?;
    let md = render_summary(summary, out);
    fsx::write_dir_atomic(out, |tmp| {
        write_manifest(&tmp.join(MANIFEST_FILE), &rows)?;
        fsx::write_atomic(&tmp.join(CSV_FILE), &csv)?;
        fsx::write_atomic(&tmp.join(PROMPTS_TXT), txt.as_bytes())?;
        fsx::write_atomic(&tmp.join(PROMPTS_JSONL), jsonl.as_bytes())?;
        fsx::write_atomic(&tmp.join(CONTACT_SHEET), &png)?;
        fsx::write_json_atomic(&tmp.join(SUMMARY_JSON), summary)?;
        fsx::write_atomic(&tmp.join(SUMMARY_MD), md.as_bytes())
    })
    .with_context(|| format!("cannot write the mine-hard output {}", out.display()))
}
