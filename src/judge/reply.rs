//! Reading a chat-completions reply as a probability of "yes, there is roadwork".
//!
//! With log-probabilities (`logprobs: true, top_logprobs: k`, as vLLM, SGLang and OpenAI return
//! them) the first generated token's `yes` and `no` candidates give
//! `p = e^lp_yes / (e^lp_yes + e^lp_no)`. Without them the text's first word decides, mapped to
//! `answer_confidence` or `1 - answer_confidence` (a bare "yes" is not certainty).

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// The judge's probability of roadwork from a reply body.
pub fn reply_probability(body: &[u8], answer_confidence: f64) -> Result<f64> {
    let v: Value = serde_json::from_slice(body).context("reply is not JSON")?;
    let choice = v
        .get("choices")
        .and_then(|c| c.get(0))
        .context("reply has no choices[0]")?;
    if let Some(p) = logprob_probability(choice) {
        return Ok(p);
    }
    let text = choice
        .pointer("/message/content")
        .and_then(Value::as_str)
        .context("reply has no choices[0].message.content text")?;
    match first_word(text).as_deref() {
        Some("yes") => Ok(answer_confidence),
        Some("no") => Ok(1.0 - answer_confidence),
        _ => bail!(
            "reply {:?} is neither yes nor no",
            text.chars().take(40).collect::<String>()
        ),
    }
}

/// The lowercased first word, letters only ("Yes." → "yes").
fn first_word(text: &str) -> Option<String> {
    let w: String = text
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphabetic())
        .flat_map(char::to_lowercase)
        .collect();
    (!w.is_empty()).then_some(w)
}

/// From the first token's top log-probabilities; `None` unless both a yes and a no candidate
/// are there (then the text decides).
fn logprob_probability(choice: &Value) -> Option<f64> {
    let first = choice.pointer("/logprobs/content/0")?;
    let tops = first.get("top_logprobs")?.as_array()?;
    let (mut yes, mut no) = (None::<f64>, None::<f64>);
    for t in tops {
        let (Some(tok), Some(lp)) = (
            t.get("token").and_then(Value::as_str),
            t.get("logprob").and_then(Value::as_f64),
        ) else {
            continue;
        };
        if !lp.is_finite() {
            continue;
        }
        let slot = match first_word(tok).as_deref() {
            Some("yes") => &mut yes,
            Some("no") => &mut no,
            _ => continue,
        };
        // Variants (" Yes", "yes") add up.
        *slot = Some(slot.map_or(lp, |s| log_add(s, lp)));
    }
    let (y, n) = (yes?, no?);
    let m = y.max(n);
    let p = (y - m).exp() / ((y - m).exp() + (n - m).exp());
    p.is_finite().then_some(p)
}

fn log_add(a: f64, b: f64) -> f64 {
    let m = a.max(b);
    m + ((a - m).exp() + (b - m).exp()).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(text: &str) -> Vec<u8> {
        serde_json::json!({"choices": [{"message": {"role": "assistant", "content": text}}]})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn text_answers() {
        assert_eq!(reply_probability(&content("Yes."), 0.9).unwrap(), 0.9);
        assert!((reply_probability(&content(" no, none"), 0.9).unwrap() - 0.1).abs() < 1e-12);
        for bad in ["maybe", "", "42"] {
            assert!(reply_probability(&content(bad), 0.9).is_err(), "{bad}");
        }
        for junk in ["not json", "{}", "{\"choices\": []}", "{\"choices\": [{}]}"] {
            assert!(reply_probability(junk.as_bytes(), 0.9).is_err());
        }
    }

    #[test]
    fn logprobs_give_the_two_way_softmax() {
        // lp yes = ln 0.6, lp " Yes" = ln 0.2 (sum 0.8), no = ln 0.2 → 0.8.
        let body = serde_json::json!({"choices": [{
            "message": {"content": "yes"},
            "logprobs": {"content": [{"token": "yes", "logprob": 0.6f64.ln(), "top_logprobs": [
                {"token": "yes", "logprob": 0.6f64.ln()},
                {"token": " Yes", "logprob": 0.2f64.ln()},
                {"token": "No", "logprob": 0.2f64.ln()},
                {"token": "maybe", "logprob": 0.0}
            ]}]}
        }]});
        let p = reply_probability(body.to_string().as_bytes(), 0.9).unwrap();
        assert!((p - 0.8).abs() < 1e-9, "{p}");
        // Only a yes candidate: the text decides.
        let body = serde_json::json!({"choices": [{
            "message": {"content": "no"},
            "logprobs": {"content": [{"top_logprobs": [{"token": "yes", "logprob": -0.1}]}]}
        }]});
        let p = reply_probability(body.to_string().as_bytes(), 0.9).unwrap();
        assert!((p - 0.1).abs() < 1e-12);
    }
}
