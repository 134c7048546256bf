//! The submission's life under the subnet's decay schedule: reward factor, alert days, when
//! retraining is due and when the submission expires.
//!
//! Ages are measured from the model card's `submission_time`. Day `N` starts exactly `N × 24 h`
//! after submission, so "day 45" is the first moment 45 full days have passed. The reward factor
//! is 1 until `valid_days`, then falls linearly to 0 over `decay_days` (0 = straight to 0).

use anyhow::{bail, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::CycleConfig;

const SECS_PER_DAY: f64 = 86_400.0;

/// What `retrain-check` concludes, in order of precedence (expired > retrain due > alert > ok).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Alert,
    RetrainDue,
    Expired,
}

impl Status {
    /// The exit status of `retrain-check` (`cycle::exit`).
    pub fn exit_code(self) -> u8 {
        use super::exit;
        match self {
            Status::Ok => exit::OK,
            Status::Alert => exit::CHECK_ALERT,
            Status::RetrainDue => exit::CHECK_RETRAIN_DUE,
            Status::Expired => exit::CHECK_EXPIRED,
        }
    }

    /// The name used in `--json` (`ok`, `alert`, `retrain_due`, `expired`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Alert => "alert",
            Status::RetrainDue => "retrain_due",
            Status::Expired => "expired",
        }
    }
}

/// The decay schedule (from the `cycle` config section; configurable because the subnet has said
/// it may change).
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub valid_days: u32,
    pub decay_days: u32,
    /// Sorted, deduplicated.
    pub alert_days: Vec<u32>,
    pub retrain_day: u32,
}

impl Schedule {
    /// Reads and checks the schedule in `cfg`; errors name the `cycle.*` key.
    pub fn from_config(cfg: &CycleConfig) -> Result<Self> {
        if cfg.valid_days == 0 {
            bail!("cycle.valid_days must be at least 1");
        }
        if cfg.retrain_day > cfg.valid_days + cfg.decay_days {
            bail!(
                "cycle.retrain_day = {} is after the submission expires (cycle.valid_days + \
                 cycle.decay_days = {}); retraining would never be due in time",
                cfg.retrain_day,
                cfg.valid_days + cfg.decay_days
            );
        }
        let mut alert_days = cfg.alert_days.clone();
        alert_days.sort_unstable();
        alert_days.dedup();
        Ok(Schedule {
            valid_days: cfg.valid_days,
            decay_days: cfg.decay_days,
            alert_days,
            retrain_day: cfg.retrain_day,
        })
    }

    /// The day the reward factor reaches 0.
    pub fn expiry_day(&self) -> u32 {
        self.valid_days + self.decay_days
    }

    /// Reward factor at an age of `age_days` (fractional days since submission).
    pub fn reward_factor(&self, age_days: f64) -> f64 {
        let valid = f64::from(self.valid_days);
        if age_days < valid {
            return 1.0;
        }
        if self.decay_days == 0 {
            return 0.0;
        }
        (1.0 - (age_days - valid) / f64::from(self.decay_days)).clamp(0.0, 1.0)
    }

    /// Where a submission of age `age_days` stands.
    pub fn position(&self, age_days: f64) -> Position {
        let day = age_days.floor() as i64;
        let factor = self.reward_factor(age_days);
        let status = if factor <= 0.0 {
            Status::Expired
        } else if day >= i64::from(self.retrain_day) {
            Status::RetrainDue
        } else if self.alert_days.iter().any(|d| day >= i64::from(*d)) {
            Status::Alert
        } else {
            Status::Ok
        };
        Position {
            age_days,
            day,
            reward_factor: factor,
            status,
            last_alert_day: self
                .alert_days
                .iter()
                .rev()
                .find(|d| day >= i64::from(**d))
                .copied(),
            next_alert_day: self
                .alert_days
                .iter()
                .find(|d| i64::from(**d) > day)
                .copied(),
            retrain_due_in_days: i64::from(self.retrain_day) - day,
            expires_in_days: i64::from(self.expiry_day()) - day,
        }
    }

    /// Position at `now` for a submission made at `submitted`.
    pub fn position_at(&self, submitted: DateTime<Utc>, now: DateTime<Utc>) -> Position {
        let secs = (now - submitted).num_milliseconds() as f64 / 1000.0;
        self.position(secs / SECS_PER_DAY)
    }
}

/// A submission's place in the schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    /// Fractional days since submission (negative when the card is from the future).
    pub age_days: f64,
    /// Whole days since submission (`floor(age_days)`).
    pub day: i64,
    pub reward_factor: f64,
    /// From the schedule alone (drift signals may still raise `ok` to `alert`).
    pub status: Status,
    /// The latest alert day already reached.
    pub last_alert_day: Option<u32>,
    /// The first alert day still ahead.
    pub next_alert_day: Option<u32>,
    /// Days until retraining is due (≤ 0: due).
    pub retrain_due_in_days: i64,
    /// Days until the reward factor is 0 (≤ 0: expired).
    pub expires_in_days: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_retrain_after_expiry() {
        let cfg = CycleConfig {
            retrain_day: 100,
            ..CycleConfig::default()
        };
        let e = Schedule::from_config(&cfg).unwrap_err().to_string();
        assert!(e.contains("cycle.retrain_day"), "{e}");
    }

    #[test]
    fn fractional_day_counts_as_the_started_day() {
        let s = Schedule::from_config(&CycleConfig::default()).unwrap();
        let p = s.position(44.999);
        assert_eq!((p.day, p.status), (44, Status::Ok));
        assert_eq!(s.position(45.0).status, Status::Alert);
    }
}
