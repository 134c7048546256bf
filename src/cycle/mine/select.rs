//! Which answers are hard: misclassified eval answers, two models disagreeing, and answers in
//! the uncertainty band; one [`Case`] per image, keeping every reason it was picked for.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::MineHardConfig;
use crate::data::manifest::ManifestRow;
use crate::eval::EvalPrediction;
use crate::serve::predlog::LoggedPrediction;

/// Why a case is hard. Ordered by usefulness: a confidently wrong answer teaches most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A known label, answered on the wrong side of 0.5.
    Misclassified,
    /// Two models answered on opposite sides of 0.5, at least `min_disagreement` apart.
    Disagreement,
    /// The VLM judge (`mine-hard --judge`) answered on the other side of 0.5 from model A, at
    /// least `min_disagreement` apart.
    JudgeDisagreement,
    /// The answer lies in the uncertainty band.
    Uncertain,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Misclassified => "misclassified",
            Reason::Disagreement => "disagreement",
            Reason::JudgeDisagreement => "judge_disagreement",
            Reason::Uncertain => "uncertain",
        }
    }
}

/// Where a case was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// `serve`'s prediction log (a validator's image kept in `low_confidence/`).
    Serve,
    /// An eval's `predictions.jsonl` (a manifest image, label known).
    Eval,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Serve => "serve",
            Origin::Eval => "eval",
        }
    }
}

/// The selection thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Criteria {
    /// Answers within `[band[0], band[1]]` are uncertain.
    pub band: [f64; 2],
    /// Least `|pA − pB|` of a disagreement.
    pub min_disagreement: f64,
}

impl Criteria {
    /// Thresholds from `mine_hard`; a band outside [0, 1] or reversed is an error naming it.
    pub fn from_config(cfg: &MineHardConfig) -> anyhow::Result<Self> {
        let [lo, hi] = cfg.band;
        if !(0.0..=1.0).contains(&lo) || !(0.0..=1.0).contains(&hi) || lo > hi {
            anyhow::bail!("mine_hard.band = [{lo}, {hi}] must be two numbers 0 <= lo <= hi <= 1");
        }
        if !(0.0..=1.0).contains(&cfg.min_disagreement) {
            anyhow::bail!(
                "mine_hard.min_disagreement = {} must be within [0, 1]",
                cfg.min_disagreement
            );
        }
        Ok(Criteria {
            band: cfg.band,
            min_disagreement: cfg.min_disagreement,
        })
    }
}

/// The hard label validators read from an answer.
pub fn said_roadwork(p: f64) -> bool {
    p > 0.5
}

/// The reasons an answer `p_a` (with a second model's `p_b` and the known `label`, when there
/// are any) is hard; empty when it is not.
pub fn reasons_of(p_a: f64, p_b: Option<f64>, label: Option<u8>, c: &Criteria) -> Vec<Reason> {
    let mut r = Vec::new();
    if label.is_some_and(|l| said_roadwork(p_a) != (l == 1)) {
        r.push(Reason::Misclassified);
    }
    if let Some(b) = p_b {
        if said_roadwork(p_a) != said_roadwork(b) && (p_a - b).abs() >= c.min_disagreement {
            r.push(Reason::Disagreement);
        }
    }
    if (c.band[0]..=c.band[1]).contains(&p_a) {
        r.push(Reason::Uncertain);
    }
    r
}

/// A rank for ordering cases, hardest first: misclassified answers in [2, 3] by the confidence
/// of the wrong answer, disagreements in [1, 2] by the gap, uncertain answers in [0, 1] by
/// closeness to 0.5.
pub fn hardness(p_a: f64, p_b: Option<f64>, reasons: &[Reason]) -> f64 {
    reasons
        .iter()
        .map(|r| match r {
            Reason::Misclassified => 2.0 + 2.0 * (p_a - 0.5).abs(),
            Reason::Disagreement => 1.0 + p_b.map_or(0.0, |b| (p_a - b).abs()),
            // Set by `apply_judge`, which ranks it by the judge's gap itself.
            Reason::JudgeDisagreement => 1.0,
            Reason::Uncertain => 1.0 - 2.0 * (p_a - 0.5).abs(),
        })
        .fold(0.0, f64::max)
}

/// One hard image.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// Content id: blake3 of the image file's bytes (= the manifest id of eval images).
    pub id: String,
    /// The image file.
    pub path: PathBuf,
    pub origin: Origin,
    /// Every reason any of its answers was hard for, sorted.
    pub reasons: Vec<Reason>,
    /// Model A's answer (the hardest of its answers).
    pub p_a: f64,
    /// Model B's answer on the same image/level/draw, when a second model was given.
    pub p_b: Option<f64>,
    /// The VLM judge's probability of roadwork (`mine-hard --judge`): a suggestion for the
    /// labeller, never ground truth.
    pub p_judge: Option<f64>,
    /// The label, when known (eval images).
    pub known_label: Option<u8>,
    /// Validator augmentation level of the hardest answer (eval).
    pub level: Option<u8>,
    pub draw: Option<u32>,
    /// Ranking key, see [`hardness`].
    pub hardness: f64,
    /// How many of this image's answers were hard.
    pub hard_answers: usize,
    /// The eval manifest's row of the image.
    pub row: Option<ManifestRow>,
}

impl Case {
    /// The label a labeller starts from: the known label, else the model's hard answer.
    pub fn suggested_label(&self) -> u8 {
        self.known_label
            .unwrap_or(u8::from(said_roadwork(self.p_a)))
    }

    /// `Some(true)` for a false positive (model said roadwork, label none), `Some(false)` for a
    /// false negative, `None` when not misclassified.
    pub fn false_positive(&self) -> Option<bool> {
        let l = self.known_label?;
        (said_roadwork(self.p_a) != (l == 1)).then_some(l == 0)
    }

    /// Joins another hard answer for the same image: keeps the hardest answer's numbers and
    /// the union of reasons.
    pub fn merge(&mut self, other: Case) {
        let mut reasons = std::mem::take(&mut self.reasons);
        reasons.extend(other.reasons.iter().copied());
        reasons.sort();
        reasons.dedup();
        let count = self.hard_answers + other.hard_answers;
        if other.hardness > self.hardness {
            let row = self.row.take();
            *self = Case {
                row: other.row.clone().or(row),
                ..other
            };
        }
        self.reasons = reasons;
        self.hard_answers = count;
    }
}

/// Merges cases of the same id and sorts them hardest first (ties by id, so the order is
/// deterministic).
pub fn merge_cases(cases: Vec<Case>) -> Vec<Case> {
    let mut by_id: BTreeMap<String, Case> = BTreeMap::new();
    for c in cases {
        match by_id.get_mut(&c.id) {
            Some(e) => e.merge(c),
            None => {
                by_id.insert(c.id.clone(), c);
            }
        }
    }
    let mut out: Vec<Case> = by_id.into_values().collect();
    sort_hardest_first(&mut out);
    out
}

/// Hardest first, ties by id.
pub fn sort_hardest_first(cases: &mut [Case]) {
    cases.sort_by(|a, b| b.hardness.total_cmp(&a.hardness).then(a.id.cmp(&b.id)));
}

/// What [`select_eval`] found.
#[derive(Debug, Clone, Default)]
pub struct EvalSelection {
    /// One case per hard image, hardest first.
    pub cases: Vec<Case>,
    /// Answers read from model A.
    pub answers: usize,
    /// Answers (not images) that were hard.
    pub hard_answers: usize,
    /// Model A answers with no model B answer for the same image/level/draw.
    pub unmatched: usize,
    /// Hard answers whose image id is not in the manifest (skipped).
    pub not_in_manifest: usize,
}

/// Hard eval answers: misclassified, in the band, or (with `b`, a second model's predictions on
/// the same manifest) disagreeing on the same image, level and draw.
pub fn select_eval(
    a: &[EvalPrediction],
    b: Option<&[EvalPrediction]>,
    manifest: &[ManifestRow],
    datasets_root: &Path,
    c: &Criteria,
) -> EvalSelection {
    let rows: HashMap<&str, &ManifestRow> = manifest.iter().map(|r| (r.id.as_str(), r)).collect();
    let b_of: Option<HashMap<(&str, u8, u32), f64>> = b.map(|b| {
        b.iter()
            .map(|p| ((p.id.as_str(), p.level, p.draw), p.prob))
            .collect()
    });
    let mut out = EvalSelection {
        answers: a.len(),
        ..Default::default()
    };
    let mut cases = Vec::new();
    for p in a {
        let p_b = match &b_of {
            Some(m) => {
                let v = m.get(&(p.id.as_str(), p.level, p.draw)).copied();
                if v.is_none() {
                    out.unmatched += 1;
                }
                v
            }
            None => None,
        };
        let reasons = reasons_of(p.prob, p_b, Some(p.label), c);
        if reasons.is_empty() {
            continue;
        }
        out.hard_answers += 1;
        let Some(row) = rows.get(p.id.as_str()) else {
            out.not_in_manifest += 1;
            continue;
        };
        cases.push(Case {
            id: p.id.clone(),
            path: row.resolve_path(datasets_root),
            origin: Origin::Eval,
            hardness: hardness(p.prob, p_b, &reasons),
            reasons,
            p_a: p.prob,
            p_b,
            p_judge: None,
            known_label: Some(p.label),
            level: Some(p.level),
            draw: Some(p.draw),
            hard_answers: 1,
            row: Some((*row).clone()),
        });
    }
    out.cases = merge_cases(cases);
    out
}

/// What [`select_serve`] found.
#[derive(Debug, Clone, Default)]
pub struct ServeSelection {
    /// One case per saved image, hardest first (ids are the saved files' blake3).
    pub cases: Vec<Case>,
    /// Records read (in the window).
    pub records: usize,
    /// Fallback answers no model scored.
    pub unscored: usize,
    /// Answers in the band without a saved image: hard, but nothing to mine.
    pub without_image: usize,
    /// Saved images that are gone or unreadable.
    pub missing_files: usize,
}

/// Where a logged `saved_image` is now: as written (relative to the working folder when serve
/// ran here), else the same file name in `low_confidence/` beside the log.
pub fn resolve_saved_image(saved: &str, log_path: &Path) -> Option<PathBuf> {
    let p = PathBuf::from(saved);
    if p.is_file() {
        return Some(p);
    }
    let name = p.file_name()?;
    let beside = log_path
        .parent()
        .unwrap_or(Path::new("."))
        .join("low_confidence")
        .join(name);
    beside.is_file().then_some(beside)
}

/// Serve answers whose image was kept (serve keeps 0.4–0.6 answers in `low_confidence/`): all
/// uncertain, plus anything else the band catches. The same image answered twice is one case.
pub fn select_serve(records: &[LoggedPrediction], log_path: &Path, c: &Criteria) -> ServeSelection {
    let mut out = ServeSelection {
        records: records.len(),
        ..Default::default()
    };
    let mut cases = Vec::new();
    let mut ids_of_file: HashMap<PathBuf, String> = HashMap::new();
    for r in records {
        if !r.scored {
            out.unscored += 1;
            continue;
        }
        let mut reasons = reasons_of(r.prediction, None, None, c);
        let Some(saved) = r.saved_image.as_deref() else {
            if !reasons.is_empty() {
                out.without_image += 1;
            }
            continue;
        };
        // Serve saved it because it was uncertain by serve's own band.
        if reasons.is_empty() {
            reasons.push(Reason::Uncertain);
        }
        let Some(path) = resolve_saved_image(saved, log_path) else {
            out.missing_files += 1;
            continue;
        };
        let id = match ids_of_file.get(&path) {
            Some(id) => id.clone(),
            None => match crate::util::hash::file_hash(&path) {
                Ok(id) => {
                    ids_of_file.insert(path.clone(), id.clone());
                    id
                }
                Err(_) => {
                    out.missing_files += 1;
                    continue;
                }
            },
        };
        let h = hardness(r.prediction, None, &reasons).max(1.0 - 2.0 * (r.prediction - 0.5).abs());
        cases.push(Case {
            id,
            path,
            origin: Origin::Serve,
            reasons,
            p_a: r.prediction,
            p_b: None,
            p_judge: None,
            known_label: None,
            level: None,
            draw: None,
            hardness: h,
            hard_answers: 1,
            row: None,
        });
    }
    out.cases = merge_cases(cases);
    out
}

/// Sets model B's answers on cases (by index; `None` = could not be scored) and re-derives
/// reasons and hardness; returns how many now disagree.
pub fn apply_second_model(cases: &mut [Case], p_b: &[Option<f64>], c: &Criteria) -> usize {
    let mut disagree = 0;
    for (case, b) in cases.iter_mut().zip(p_b) {
        let Some(b) = *b else { continue };
        case.p_b = Some(b);
        let mut r = reasons_of(case.p_a, Some(b), case.known_label, c);
        r.extend(case.reasons.iter().copied());
        r.sort();
        r.dedup();
        if r.contains(&Reason::Disagreement) {
            disagree += 1;
        }
        case.hardness = case.hardness.max(hardness(case.p_a, Some(b), &r));
        case.reasons = r;
    }
    sort_hardest_first(cases);
    disagree
}

/// Sets the judge's opinions on cases (by index; `None` = no opinion) and adds
/// [`Reason::JudgeDisagreement`] where the judge is on the other side of 0.5 from model A by at
/// least `min_disagreement` (ranked like a two-model disagreement, by the gap); returns how many
/// disagree. Known labels stay as they are: the judge only suggests.
pub fn apply_judge(cases: &mut [Case], p_judge: &[Option<f64>], c: &Criteria) -> usize {
    let mut disagree = 0;
    for (case, j) in cases.iter_mut().zip(p_judge) {
        let Some(j) = *j else { continue };
        case.p_judge = Some(j);
        if said_roadwork(case.p_a) != said_roadwork(j) && (case.p_a - j).abs() >= c.min_disagreement
        {
            disagree += 1;
            if !case.reasons.contains(&Reason::JudgeDisagreement) {
                case.reasons.push(Reason::JudgeDisagreement);
                case.reasons.sort();
            }
            case.hardness = case.hardness.max(1.0 + (case.p_a - j).abs());
        }
    }
    sort_hardest_first(cases);
    disagree
}
