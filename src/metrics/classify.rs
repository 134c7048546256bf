//! Confusion-matrix metrics (accuracy, MCC, precision, recall, F1) and ROC-AUC.
//!
//! Degenerate cases follow scikit-learn, which the subnet's validators use: precision, recall and
//! F1 are 0 when undefined (`zero_division=0`) and MCC is 0 when its denominator is 0.

use serde::{Deserialize, Serialize};

use super::calibration::{brier, ece, ECE_BINS};

/// Binary confusion matrix (positive = label 1 = roadwork).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    pub tp: u64,
    pub fp: u64,
    pub tn: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
}

impl Confusion {
    /// Counts hard predictions against labels (both `0/1`).
    pub fn from_predictions(labels: &[u8], preds: &[u8]) -> Self {
        let mut c = Confusion::default();
        for (&y, &p) in labels.iter().zip(preds) {
            c.add(y, p);
        }
        c
    }

    /// Adds one (label, prediction) pair.
    pub fn add(&mut self, label: u8, pred: u8) {
        match (label != 0, pred != 0) {
            (true, true) => self.tp += 1,
            (false, true) => self.fp += 1,
            (false, false) => self.tn += 1,
            (true, false) => self.fn_ += 1,
        }
    }

    /// Removes one (label, prediction) pair added earlier (sliding windows).
    pub fn remove(&mut self, label: u8, pred: u8) {
        match (label != 0, pred != 0) {
            (true, true) => self.tp -= 1,
            (false, true) => self.fp -= 1,
            (false, false) => self.tn -= 1,
            (true, false) => self.fn_ -= 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.tp + self.fp + self.tn + self.fn_
    }

    pub fn accuracy(&self) -> f64 {
        let n = self.total();
        if n == 0 {
            0.0
        } else {
            (self.tp + self.tn) as f64 / n as f64
        }
    }

    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }

    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }

    pub fn f1(&self) -> f64 {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }

    /// Matthews correlation coefficient; 0 when undefined (a row or column of the matrix is empty),
    /// as `sklearn.metrics.matthews_corrcoef` returns.
    pub fn mcc(&self) -> f64 {
        let (tp, fp, tn, fn_) = (
            self.tp as f64,
            self.fp as f64,
            self.tn as f64,
            self.fn_ as f64,
        );
        let den = ((tp + fp) * (tp + fn_) * (tn + fp) * (tn + fn_)).sqrt();
        if den == 0.0 {
            0.0
        } else {
            (tp * tn - fp * fn_) / den
        }
    }
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// The hard answer a validator derives from a served probability: `np.round(p)`, i.e. roadwork
/// only when `p > 0.5` (0.5 itself rounds half-to-even to 0).
pub fn hard_label(p: f64) -> u8 {
    u8::from(p > 0.5)
}

/// ROC-AUC by the rank-sum (Mann-Whitney) formula with tied scores sharing their average rank;
/// `None` when only one class is present.
pub fn roc_auc(labels: &[u8], scores: &[f64]) -> Option<f64> {
    let n_pos = labels.iter().filter(|&&y| y != 0).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        // Ranks are 1-based; a tie block i..=j shares the mean rank.
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if labels[k] != 0 {
                rank_sum_pos += avg_rank;
            }
        }
        i = j + 1;
    }
    let n_pos = n_pos as f64;
    Some((rank_sum_pos - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg as f64))
}

/// ROC curve points `(fpr, tpr)` from (0,0) to (1,1), one point per distinct score.
pub fn roc_curve(labels: &[u8], scores: &[f64]) -> Vec<(f64, f64)> {
    let n_pos = labels.iter().filter(|&&y| y != 0).count() as f64;
    let n_neg = labels.len() as f64 - n_pos;
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut pts = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut i = 0;
    while i < idx.len() {
        let s = scores[idx[i]];
        while i < idx.len() && scores[idx[i]] == s {
            if labels[idx[i]] != 0 {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            i += 1;
        }
        pts.push((
            if n_neg > 0.0 { fp / n_neg } else { 0.0 },
            if n_pos > 0.0 { tp / n_pos } else { 0.0 },
        ));
    }
    pts
}

/// Every headline metric of a set of served probabilities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinaryMetrics {
    pub n: usize,
    pub n_pos: usize,
    pub accuracy: f64,
    pub mcc: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// `None` when only one class is present.
    pub roc_auc: Option<f64>,
    pub ece: f64,
    pub brier: f64,
    pub confusion: Confusion,
}

impl BinaryMetrics {
    /// Metrics of probabilities `probs` (hard answer = `p > 0.5`, as validators round).
    pub fn compute(labels: &[u8], probs: &[f64]) -> Self {
        let preds: Vec<u8> = probs.iter().map(|&p| hard_label(p)).collect();
        let confusion = Confusion::from_predictions(labels, &preds);
        BinaryMetrics {
            n: labels.len(),
            n_pos: labels.iter().filter(|&&y| y != 0).count(),
            accuracy: confusion.accuracy(),
            mcc: confusion.mcc(),
            precision: confusion.precision(),
            recall: confusion.recall(),
            f1: confusion.f1(),
            roc_auc: roc_auc(labels, probs),
            ece: ece(labels, probs, ECE_BINS),
            brier: brier(labels, probs),
            confusion,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_confusion_metrics() {
        // tp=3 fp=1 tn=4 fn=2
        let labels = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0];
        let preds = [1, 1, 1, 0, 0, 1, 0, 0, 0, 0];
        let c = Confusion::from_predictions(&labels, &preds);
        assert_eq!((c.tp, c.fp, c.tn, c.fn_), (3, 1, 4, 2));
        assert!((c.accuracy() - 0.7).abs() < 1e-12);
        assert!((c.precision() - 0.75).abs() < 1e-12);
        assert!((c.recall() - 0.6).abs() < 1e-12);
        assert!((c.f1() - 2.0 * 0.75 * 0.6 / 1.35).abs() < 1e-12);
        // (3*4 - 1*2) / sqrt(4*5*5*6) = 10 / sqrt(600)
        assert!((c.mcc() - 10.0 / 600f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn degenerate_cases_are_zero_not_nan() {
        // One class only and constant predictions: MCC undefined -> 0, precision 0/0 -> 0.
        let c = Confusion::from_predictions(&[1, 1, 1], &[1, 1, 1]);
        assert_eq!(c.mcc(), 0.0);
        assert_eq!(c.accuracy(), 1.0);
        let c = Confusion::from_predictions(&[0, 1, 0], &[0, 0, 0]);
        assert_eq!(c.mcc(), 0.0);
        assert_eq!(c.precision(), 0.0);
        assert_eq!(c.f1(), 0.0);
        assert_eq!(Confusion::default().accuracy(), 0.0);
        // Perfectly wrong is -1.
        let c = Confusion::from_predictions(&[0, 1], &[1, 0]);
        assert!((c.mcc() + 1.0).abs() < 1e-12);
    }

    #[test]
    fn auc_with_ties_matches_hand_count() {
        // pos scores {0.8, 0.4}, neg {0.4, 0.1}: pairs (0.8>0.4)=1,(0.8>0.1)=1,(0.4=0.4)=0.5,(0.4>0.1)=1
        let auc = roc_auc(&[1, 1, 0, 0], &[0.8, 0.4, 0.4, 0.1]).unwrap();
        assert!((auc - 3.5 / 4.0).abs() < 1e-12);
        assert_eq!(roc_auc(&[1, 1], &[0.1, 0.2]), None);
        let curve = roc_curve(&[1, 1, 0, 0], &[0.8, 0.4, 0.4, 0.1]);
        assert_eq!(curve.first(), Some(&(0.0, 0.0)));
        assert_eq!(curve.last(), Some(&(1.0, 1.0)));
        assert_eq!(curve[1], (0.0, 0.5));
    }

    #[test]
    fn hard_label_rounds_like_numpy() {
        assert_eq!(hard_label(0.5), 0);
        assert_eq!(hard_label(0.5000001), 1);
        assert_eq!(hard_label(0.0), 0);
    }
}
