//! Classification metrics, calibration, and the subnet's scoring rule (issue #4).
//!
//! Everything here works on plain slices (labels `0/1`, probabilities in `[0, 1]`) so training,
//! evaluation and A/B tests share one implementation.

pub mod calibration;
pub mod classify;
pub mod score;
pub mod stats;

pub use calibration::{
    brier, ece, fit_temperature, reliability_bins, sigmoid, ReliabilityBin, ECE_BINS,
};
pub use classify::{roc_auc, roc_curve, BinaryMetrics, Confusion};
pub use score::{
    choose_threshold, simulate_scores, MinerTracker, ScoreItem, ScoreSummary, REWARD_CURVE_EXPONENT,
};
