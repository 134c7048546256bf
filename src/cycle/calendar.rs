//! `retrain-check --calendar FILE.ics`: the deployed submission's alert, retrain and expiry days
//! as an iCalendar file (RFC 5545), one all-day event per day.
//!
//! UIDs are stable per model version and day, so re-writing the file after every check updates
//! the events in a subscribed calendar instead of duplicating them. Lines end in CRLF and are
//! folded at 75 octets, as RFC 5545 requires.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use chrono::{DateTime, Duration, NaiveDate, Utc};

use super::schedule::Schedule;
use crate::export::card::ModelCard;
use crate::util::fsx;

/// One calendar day of the schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct CalendarDay {
    /// Days since submission.
    pub day: u32,
    /// UTC date on which that day starts.
    pub date: NaiveDate,
    /// What happens: `alert`, `retrain due`, `decay starts`, `expires`.
    pub what: Vec<&'static str>,
}

/// The schedule's notable days for a submission made at `submitted`, in day order.
pub fn calendar_days(schedule: &Schedule, submitted: DateTime<Utc>) -> Vec<CalendarDay> {
    let mut days: BTreeMap<u32, Vec<&'static str>> = BTreeMap::new();
    for d in &schedule.alert_days {
        days.entry(*d).or_default().push("alert");
    }
    days.entry(schedule.retrain_day)
        .or_default()
        .push("retrain due");
    if schedule.decay_days > 0 {
        days.entry(schedule.valid_days)
            .or_default()
            .push("reward decay starts");
    }
    days.entry(schedule.expiry_day())
        .or_default()
        .push("expires (reward factor 0)");
    days.into_iter()
        .map(|(day, what)| CalendarDay {
            day,
            date: (submitted + Duration::days(i64::from(day))).date_naive(),
            what,
        })
        .collect()
}

/// Escapes TEXT values (RFC 5545 §3.3.11).
fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            ';' => o.push_str("\\;"),
            ',' => o.push_str("\\,"),
            '\n' => o.push_str("\\n"),
            '\r' => {}
            c => o.push(c),
        }
    }
    o
}

/// Folds one content line into CRLF-terminated physical lines of at most 75 octets (a
/// continuation line's leading space counts), never splitting a UTF-8 character.
pub fn fold_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + line.len() / 70 * 3 + 2);
    let mut used = 0;
    for c in line.chars() {
        let w = c.len_utf8();
        if used + w > 75 {
            out.push_str("\r\n ");
            used = 1;
        }
        out.push(c);
        used += w;
    }
    out.push_str("\r\n");
    out
}

/// UID-safe form of a model name.
fn uid_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The iCalendar text for `card` under `schedule`; `stamp` is the DTSTAMP (the check's time).
pub fn render_ics(card: &ModelCard, schedule: &Schedule, stamp: DateTime<Utc>) -> Result<String> {
    let submitted = card.submitted_at()?;
    let dtstamp = stamp.format("%Y%m%dT%H%M%SZ").to_string();
    let mut lines: Vec<String> = vec![
        "BEGIN:VCALENDAR".into(),
        "VERSION:2.0".into(),
        "PRODID:-//sv72//retrain-check//EN".into(),
        "CALSCALE:GREGORIAN".into(),
        "METHOD:PUBLISH".into(),
        format!(
            "X-WR-CALNAME:{}",
            escape(&format!("sv72 {} {}", card.model_name, card.version))
        ),
    ];
    for d in calendar_days(schedule, submitted) {
        let factor = schedule.reward_factor(f64::from(d.day));
        let summary = format!(
            "sv72 {} {}: day {} {}",
            card.model_name,
            card.version,
            d.day,
            d.what.join(", ")
        );
        let description = format!(
            "Model {} {} submitted by {} at {}. Day {} of the submission: {}. Reward factor \
             that day {:.3}. Check with `sv72 retrain-check`; retrain with \
             `sv72 retrain-check --run`.",
            card.model_name,
            card.version,
            card.submitted_by,
            submitted.to_rfc3339(),
            d.day,
            d.what.join(", "),
            factor
        );
        lines.extend([
            "BEGIN:VEVENT".into(),
            format!(
                "UID:sv72-{}-{}-day{}@sv72",
                uid_part(&card.model_name),
                uid_part(&card.version),
                d.day
            ),
            format!("DTSTAMP:{dtstamp}"),
            format!("DTSTART;VALUE=DATE:{}", d.date.format("%Y%m%d")),
            format!(
                "DTEND;VALUE=DATE:{}",
                (d.date + Duration::days(1)).format("%Y%m%d")
            ),
            format!("SUMMARY:{}", escape(&summary)),
            format!("DESCRIPTION:{}", escape(&description)),
            "TRANSP:TRANSPARENT".into(),
            "END:VEVENT".into(),
        ]);
    }
    lines.push("END:VCALENDAR".into());
    Ok(lines.iter().map(|l| fold_line(l)).collect())
}

/// Writes [`render_ics`] to `path` atomically.
pub fn write_ics(
    path: &Path,
    card: &ModelCard,
    schedule: &Schedule,
    stamp: DateTime<Utc>,
) -> Result<()> {
    fsx::write_atomic(path, render_ics(card, schedule, stamp)?.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_respects_octets_and_utf8() {
        let line = format!("DESCRIPTION:{}", "é".repeat(80));
        let folded = fold_line(&line);
        for l in folded.split("\r\n").filter(|l| !l.is_empty()) {
            assert!(l.len() <= 75, "{} octets", l.len());
        }
        let unfolded = folded.trim_end_matches("\r\n").replace("\r\n ", "");
        assert_eq!(unfolded, line);
    }
}
