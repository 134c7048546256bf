//! Rate-limited event lines: one structured line per rejection, at most N per reason per second,
//! so a flood cannot fill the disk or drown the other events. Lines held back are counted and
//! the next line of that reason says how many (`"suppressed": k`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::Value;

use super::metrics::log_event;

struct Window {
    second: u64,
    written: u32,
    suppressed: u64,
}

/// Per-reason fixed one-second windows.
pub struct RateLog {
    per_s: u32,
    clock: Instant,
    windows: Mutex<HashMap<&'static str, Window>>,
}

impl RateLog {
    /// At most `per_s` lines per reason per second (0 = none).
    pub fn new(per_s: u32) -> Self {
        Self {
            per_s,
            clock: Instant::now(),
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Writes `event` with `reason` and `fields` unless this reason's budget for the current
    /// second is spent; returns whether it was written.
    pub fn log(&self, level: &str, event: &str, reason: &'static str, fields: Value) -> bool {
        let second = self.clock.elapsed().as_secs();
        let suppressed = {
            let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
            let win = w.entry(reason).or_insert(Window {
                second,
                written: 0,
                suppressed: 0,
            });
            if win.second != second {
                win.second = second;
                win.written = 0;
            }
            if win.written >= self.per_s {
                win.suppressed += 1;
                return false;
            }
            win.written += 1;
            std::mem::take(&mut win.suppressed)
        };
        let mut obj = serde_json::Map::new();
        obj.insert("reason".into(), reason.into());
        if let Value::Object(m) = fields {
            obj.extend(m);
        }
        if suppressed > 0 {
            obj.insert("suppressed".into(), suppressed.into());
        }
        log_event(level, event, Value::Object(obj));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_reason_and_counts_the_rest() {
        let l = RateLog::new(3);
        let a: Vec<bool> = (0..10)
            .map(|_| l.log("warn", "t", "a", serde_json::json!({})))
            .collect();
        // Unless the second ticked over mid-loop, exactly 3 pass.
        let passed = a.iter().filter(|x| **x).count();
        assert!((3..=6).contains(&passed), "{a:?}");
        assert!(
            l.log("warn", "t", "b", serde_json::json!({})),
            "other reasons unaffected"
        );
        assert!(!RateLog::new(0).log("warn", "t", "a", serde_json::json!({})));
    }
}
