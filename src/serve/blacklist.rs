//! The axon's blacklist and priority policy over the validator set (`chain::Metagraph`).

use crate::chain::Metagraph;

/// Why the blacklist refused a hotkey; `reason()` is the text after "Key is blacklisted: ".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MissingHotkey,
    Unknown,
    NoPermit,
    LowStake,
}

impl Refusal {
    /// The reason text (the subnet template miner's wording where it has one).
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::MissingHotkey => "Missing dendrite or hotkey",
            Refusal::Unknown => "Unrecognized hotkey",
            Refusal::NoPermit => "Non-validator hotkey",
            Refusal::LowStake => "Insufficient stake",
        }
    }

    /// Label for metrics.
    pub fn metric_label(self) -> &'static str {
        match self {
            Refusal::MissingHotkey => "blacklist_missing_hotkey",
            Refusal::Unknown => "blacklist_unknown_hotkey",
            Refusal::NoPermit => "blacklist_no_permit",
            Refusal::LowStake => "blacklist_low_stake",
        }
    }
}

/// The blacklist as a method of the validator set.
pub trait Blacklist {
    /// Known hotkey, validator permit, stake at least `min_stake`. On success returns the
    /// caller's stake, which is its priority.
    fn admit(&self, hotkey: Option<&str>, min_stake: f64) -> Result<f64, Refusal>;
}

impl Blacklist for Metagraph {
    fn admit(&self, hotkey: Option<&str>, min_stake: f64) -> Result<f64, Refusal> {
        let hotkey = hotkey.ok_or(Refusal::MissingHotkey)?;
        let n = self.get(hotkey).ok_or(Refusal::Unknown)?;
        if !n.validator_permit {
            return Err(Refusal::NoPermit);
        }
        if n.stake < min_stake {
            return Err(Refusal::LowStake);
        }
        Ok(n.stake)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::Neuron;

    fn n(h: &str, stake: f64, permit: bool) -> Neuron {
        Neuron {
            hotkey: h.into(),
            uid: 0,
            stake,
            validator_permit: permit,
        }
    }

    #[test]
    fn blacklist_rules() {
        let m = Metagraph::from_neurons([
            n("a", 5000.0, true),
            n("b", 5000.0, false),
            n("c", 10.0, true),
        ]);
        assert_eq!(m.admit(Some("a"), 1000.0), Ok(5000.0));
        assert_eq!(m.admit(Some("b"), 1000.0), Err(Refusal::NoPermit));
        assert_eq!(m.admit(Some("c"), 1000.0), Err(Refusal::LowStake));
        assert_eq!(m.admit(Some("z"), 1000.0), Err(Refusal::Unknown));
        assert_eq!(m.admit(None, 1000.0), Err(Refusal::MissingHotkey));
    }
}
