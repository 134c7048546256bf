//! `model_card.json` as the subnet requires it (`docs/Mining.md` of the StreetVision subnet):
//! `{model_name, description, version, submitted_by, submission_time}`.
//!
//! sv72 writes `version` as an `"X.Y.Z"` string and `submission_time` as integer Unix seconds
//! (UTC), the two readings of the subnet's template (`<VERSION NUMBER IN X.Y.Z format>`,
//! `<TIMESTAMP>`). Reading is lenient about the timestamp (integer or fractional seconds, or an
//! RFC 3339 string) because cards written by other tools vary.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// File name the subnet looks for.
pub const MODEL_CARD_FILE: &str = "model_card.json";

/// A semantic version `X.Y.Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl Version {
    /// The next patch release (`1.2.3` → `1.2.4`).
    pub fn bump_patch(self) -> Self {
        Version {
            patch: self.patch + 1,
            ..self
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl FromStr for Version {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.trim().split('.').collect();
        let ok = parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        if !ok {
            bail!("version {s:?} is not in X.Y.Z format (three dot-separated numbers, e.g. 1.0.0)");
        }
        let n = |p: &str| {
            p.parse::<u64>()
                .with_context(|| format!("version {s:?}: {p:?} is too large"))
        };
        Ok(Version {
            major: n(parts[0])?,
            minor: n(parts[1])?,
            patch: n(parts[2])?,
        })
    }
}

/// The subnet's model card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    pub model_name: String,
    pub description: String,
    /// `X.Y.Z`.
    pub version: String,
    /// The miner's hotkey, SS58.
    pub submitted_by: String,
    /// Unix seconds, UTC.
    #[serde(deserialize_with = "de_timestamp")]
    pub submission_time: i64,
}

fn de_timestamp<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<i64, D::Error> {
    use serde::de::Error;
    let v = serde_json::Value::deserialize(d)?;
    match &v {
        serde_json::Value::Number(n) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite())
                    .map(|f| f.floor() as i64)
            })
            .ok_or_else(|| D::Error::custom(format!("submission_time {n} is not a Unix time"))),
        serde_json::Value::String(s) => {
            if let Ok(i) = s.trim().parse::<i64>() {
                return Ok(i);
            }
            DateTime::parse_from_rfc3339(s.trim())
                .map(|t| t.timestamp())
                .map_err(|_| {
                    D::Error::custom(format!(
                        "submission_time {s:?} is neither Unix seconds nor an RFC 3339 time"
                    ))
                })
        }
        other => Err(D::Error::custom(format!(
            "submission_time must be Unix seconds, got {other}"
        ))),
    }
}

impl ModelCard {
    /// Reads and validates a card; errors name the file and the field.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read the model card {} (is a model deployed? see `sv72 deploy`)",
                path.display()
            )
        })?;
        let card: ModelCard = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid subnet model card", path.display()))?;
        card.validate()
            .with_context(|| format!("invalid model card {}", path.display()))?;
        Ok(card)
    }

    /// Field checks the subnet relies on: a parseable version, a valid SS58 hotkey, a sane time.
    pub fn validate(&self) -> Result<()> {
        if self.model_name.trim().is_empty() {
            bail!("model_name is empty");
        }
        self.parsed_version().context("field version")?;
        crate::keys::ss58_decode(&self.submitted_by)
            .with_context(|| format!("field submitted_by {:?}", self.submitted_by))?;
        self.submitted_at()?;
        Ok(())
    }

    /// `version` parsed.
    pub fn parsed_version(&self) -> Result<Version> {
        self.version.parse()
    }

    /// `submission_time` as a UTC time.
    pub fn submitted_at(&self) -> Result<DateTime<Utc>> {
        match Utc.timestamp_opt(self.submission_time, 0) {
            chrono::LocalResult::Single(t) if self.submission_time > 0 => Ok(t),
            _ => bail!(
                "field submission_time {} is not a valid Unix time",
                self.submission_time
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_bump_and_reject() {
        let v: Version = "1.2.9".parse().unwrap();
        assert_eq!(v.bump_patch().to_string(), "1.2.10");
        for bad in ["1.2", "1.2.3.4", "v1.2.3", "1..3", "1.2.x", ""] {
            assert!(bad.parse::<Version>().is_err(), "{bad}");
        }
        assert!("0.9.0".parse::<Version>().unwrap() < "0.10.0".parse().unwrap());
    }

    #[test]
    fn timestamps_read_leniently() {
        let hk = crate::keys::ss58_encode(&[7; 32], 42);
        for (raw, want) in [
            ("1767225600", 1_767_225_600),
            ("1767225600.75", 1_767_225_600),
            ("\"2026-01-01T00:00:00Z\"", 1_767_225_600),
        ] {
            let text = format!(
                r#"{{"model_name":"m","description":"d","version":"1.0.0","submitted_by":"{hk}","submission_time":{raw}}}"#
            );
            let c: ModelCard = serde_json::from_str(&text).unwrap();
            c.validate().unwrap();
            assert_eq!(c.submission_time, want, "{raw}");
        }
        let bad = format!(
            r#"{{"model_name":"m","description":"d","version":"1.0","submitted_by":"{hk}","submission_time":1}}"#
        );
        let c: ModelCard = serde_json::from_str(&bad).unwrap();
        assert!(format!("{:#}", c.validate().unwrap_err()).contains("version"));
    }
}
