//! NATIX participant registration (the subnet's `register.sh`, for miners).
//!
//! The miner signs a fresh Unix timestamp with its hotkey exactly as `btcli w sign --use-hotkey
//! --message TS` does (sr25519, context `substrate`, the raw message bytes, the 64-byte signature
//! as lowercase hex without `0x`), POSTs it to `{endpoint}/participants/register`, then polls
//! `{endpoint}/participants/registration-status/{uid}` until the service answers or the timeout
//! runs out.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::export::card::ModelCard;
use crate::keys::SigningKey;

/// What to register and where.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Base URL of the service (`register.endpoint`).
    pub endpoint: String,
    /// The miner's UID on subnet 72.
    pub uid: u16,
    /// The submission's Hugging Face repository, `org/name`.
    pub model_repo: String,
    /// Wait between status polls.
    pub poll_interval: Duration,
    /// Give up polling after this long.
    pub timeout: Duration,
}

/// How a registration ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The service answered `succeeded`/`success`; the final status payload.
    Succeeded(Value),
    /// The service answered `failed`/`error` (its `error_message`), or its answer to the
    /// registration POST was not JSON (as `register.sh` treats it).
    Rejected { reason: String, payload: Value },
    /// Still pending when the timeout ran out; the last status seen.
    TimedOut { last_status: String },
}

/// One parsed answer of the status endpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    Succeeded(Value),
    Failed {
        reason: String,
        payload: Value,
    },
    /// `pending`, `queued`, `processing` or no status: keep polling.
    Pending(String),
    /// A status `register.sh` does not know: shown, then polling goes on.
    Unknown(String, Value),
    /// Not JSON: shown, then polling goes on.
    NotJson(String),
}

/// Classifies a status answer as `register.sh` does.
pub fn classify_status(body: &str) -> Status {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return Status::NotJson(body.chars().take(300).collect());
    };
    let status = v
        .get("status")
        .and_then(|s| s.as_str())
        .unwrap_or("")
        .to_string();
    match status.as_str() {
        "succeeded" | "success" => Status::Succeeded(v),
        "failed" | "error" => {
            let reason = v
                .get("error_message")
                .and_then(|m| m.as_str())
                .filter(|m| !m.is_empty())
                .unwrap_or("(no error_message given)")
                .to_string();
            Status::Failed { reason, payload: v }
        }
        "pending" | "queued" | "processing" | "" => Status::Pending(status),
        _ => Status::Unknown(status, v),
    }
}

/// The message `register.sh` signs: the current Unix time in seconds, as decimal text.
pub fn timestamp_message() -> String {
    chrono::Utc::now().timestamp().to_string()
}

/// The registration body, field for field what `register.sh` builds with `jq --arg` (so `uid`
/// is a string). The signature is `btcli w sign`'s `signed_message`: lowercase hex, no `0x`.
pub fn registration_payload(uid: u16, message: &str, key: &SigningKey, model_repo: &str) -> Value {
    json!({
        "uid": uid.to_string(),
        "message": message,
        "natix_public_key": key.ss58(),
        "natix_signature": hex::encode(key.sign_bytes(message.as_bytes())),
        "type": "miner",
        "model_repo": model_repo,
    })
}

/// Checks that the model card's `submitted_by` is the signing hotkey: a card submitted by another
/// hotkey silently costs the submission.
pub fn check_card_submitter(card_path: &Path, hotkey_ss58: &str) -> Result<()> {
    let card = ModelCard::read(card_path)
        .with_context(|| format!("--check-card: cannot read {}", card_path.display()))?;
    if card.submitted_by != hotkey_ss58 {
        bail!(
            "{}: submitted_by is {} but the signing hotkey is {hotkey_ss58}. Validators credit the \
             model to submitted_by; re-export with --hotkey {hotkey_ss58} (and push) before \
             registering",
            card_path.display(),
            card.submitted_by
        );
    }
    Ok(())
}

/// Sends the registration and polls for its outcome. `say` receives human-readable progress
/// lines (no secrets ever pass through it). Network errors of the POST are errors; those of a
/// status poll are reported and polling goes on, as in `register.sh`.
pub fn register(
    reg: &Registration,
    key: &SigningKey,
    say: &mut dyn FnMut(&str),
) -> Result<Outcome> {
    crate::export::push::check_repo_id(&reg.model_repo)
        .context("register.model_repo / --model-repo")?;
    let base = reg.endpoint.trim_end_matches('/');
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let message = timestamp_message();
    let payload = registration_payload(reg.uid, &message, key, &reg.model_repo);
    say(&format!(
        "signed timestamp {message} with hotkey {}; registering UID {} with model {}",
        key.ss58(),
        reg.uid,
        reg.model_repo
    ));
    let url = format!("{base}/participants/register");
    let body = serde_json::to_vec(&payload)?;
    let mut resp = agent
        .post(&url)
        .header("Content-Type", "application/json")
        .send(&body[..])
        .with_context(|| format!("cannot reach the registration service at {url}"))?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    match serde_json::from_str::<Value>(&text) {
        Err(_) => {
            let shown: String = text.chars().take(300).collect();
            return Ok(Outcome::Rejected {
                reason: format!(
                    "the registration service answered HTTP {status} with non-JSON: {shown}"
                ),
                payload: Value::String(shown),
            });
        }
        Ok(v) => match v.get("detail").filter(|d| !d.is_null()) {
            Some(Value::String(d)) => say(&format!("service (HTTP {status}): {d}")),
            Some(d) => say(&format!("service (HTTP {status}): {d}")),
            None => say(&format!("service (HTTP {status}): {v}")),
        },
    }

    let status_url = format!("{base}/participants/registration-status/{}", reg.uid);
    say(&format!(
        "polling {status_url} every {:?} (timeout {:?}); check later with `curl -s {status_url}`",
        reg.poll_interval, reg.timeout
    ));
    let start = Instant::now();
    let mut last = String::from("(none)");
    loop {
        match agent.get(&status_url).call() {
            Ok(mut r) => {
                let code = r.status().as_u16();
                let text = r.body_mut().read_to_string().unwrap_or_default();
                match classify_status(&text) {
                    Status::Succeeded(v) => return Ok(Outcome::Succeeded(v)),
                    Status::Failed { reason, payload } => {
                        return Ok(Outcome::Rejected { reason, payload })
                    }
                    Status::Pending(s) => {
                        last = if s.is_empty() { "(empty)".into() } else { s };
                    }
                    Status::Unknown(s, v) => {
                        say(&format!("unknown status {s:?}: {v}"));
                        last = s;
                    }
                    Status::NotJson(t) => {
                        say(&format!(
                            "status endpoint answered HTTP {code} with non-JSON: {t}"
                        ));
                    }
                }
            }
            Err(e) => say(&format!("status poll failed: {e}")),
        }
        if start.elapsed() + reg.poll_interval > reg.timeout {
            return Ok(Outcome::TimedOut { last_status: last });
        }
        std::thread::sleep(reg.poll_interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::verify_sr25519;

    #[test]
    fn status_classes_follow_register_sh() {
        assert!(matches!(
            classify_status(r#"{"status":"success"}"#),
            Status::Succeeded(_)
        ));
        assert!(matches!(
            classify_status(r#"{"status":"succeeded"}"#),
            Status::Succeeded(_)
        ));
        match classify_status(r#"{"status":"failed","error_message":"repo not found"}"#) {
            Status::Failed { reason, .. } => assert_eq!(reason, "repo not found"),
            s => panic!("{s:?}"),
        }
        assert!(matches!(
            classify_status(r#"{"status":"error"}"#),
            Status::Failed { .. }
        ));
        for p in ["pending", "queued", "processing"] {
            assert_eq!(
                classify_status(&format!(r#"{{"status":"{p}"}}"#)),
                Status::Pending(p.into())
            );
        }
        assert_eq!(classify_status("{}"), Status::Pending(String::new()));
        assert!(matches!(
            classify_status(r#"{"status":"weird"}"#),
            Status::Unknown(..)
        ));
        assert!(matches!(
            classify_status("<html>502</html>"),
            Status::NotJson(_)
        ));
    }

    #[test]
    fn payload_matches_btcli_sign() {
        let key = SigningKey::from_seed(&[3u8; 32]).unwrap();
        let p = registration_payload(17, "1700000000", &key, "org/model");
        assert_eq!(p["uid"], "17");
        assert_eq!(p["type"], "miner");
        assert_eq!(p["natix_public_key"], key.ss58());
        let sig = p["natix_signature"].as_str().unwrap();
        assert_eq!(sig.len(), 128);
        assert!(!sig.starts_with("0x"));
        assert!(verify_sr25519(&key.ss58(), b"1700000000", &format!("0x{sig}")).is_ok());
        let now: i64 = timestamp_message().parse().unwrap();
        assert!((now - chrono::Utc::now().timestamp()).abs() <= 2);
    }
}
