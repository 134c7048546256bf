//! Exit statuses shared by the cycle's subcommands, so cron jobs and scripts can branch on them.
//!
//! 0 is success and 1 an error in every subcommand; clap uses 2 for a usage error. The rest are
//! distinct per meaning (documented in the README).

/// Success (`ab-test`: promote B; `retrain-check`: nothing due; `register`: succeeded).
pub const OK: u8 = 0;
/// Any error (bad input, I/O, a failed request).
pub const ERROR: u8 = 1;
/// `ab-test`: B is not better by the configured rule; keep A.
pub const AB_KEEP: u8 = 3;
/// `retrain-check`: an alert day has passed or a drift signal fired.
pub const CHECK_ALERT: u8 = 3;
/// `retrain-check`: retraining is due (`cycle.retrain_day` passed).
pub const CHECK_RETRAIN_DUE: u8 = 4;
/// `retrain-check`: the submission's reward factor has reached 0.
pub const CHECK_EXPIRED: u8 = 5;
/// `retrain-check --run`: a pipeline step failed; the deployed model is untouched.
pub const RUN_FAILED: u8 = 6;
/// `retrain-check --run`: another run holds the lock.
pub const LOCKED: u8 = 7;
/// `register`: the service answered that registration failed.
pub const REGISTER_REJECTED: u8 = 3;
/// `register`: still pending when the timeout ran out.
pub const REGISTER_TIMEOUT: u8 = 4;
