//! What the axon needs to know, read and checked from the `serve:` config section.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::config::ServeConfig;
use crate::keys::ss58_decode;

/// Connection limits (see `serve::conn`).
#[derive(Debug, Clone)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub max_per_ip: usize,
    /// A head must arrive whole within this of its first byte (of the accept, for the first).
    pub header_timeout: Duration,
    /// Keep-alive idle limit.
    pub idle_timeout: Duration,
}

/// Image decoding limits (see `serve::image`).
#[derive(Debug, Clone)]
pub struct ImageLimits {
    /// Largest decoded image file accepted.
    pub max_bytes: usize,
    pub max_pixels: u64,
    /// Above this many pixels an image takes the large lane.
    pub large_pixels: u64,
    pub max_large: usize,
    pub max_small: usize,
}

/// Everything the server needs to know; `from_config` fills it from `serve:` in the config.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub addr: SocketAddr,
    /// Our own hotkey (SS58): the axon hotkey in every signed message.
    pub axon_hotkey: String,
    pub min_stake: f64,
    pub max_batch: usize,
    pub max_wait: Duration,
    /// Images waiting for inference at most; beyond it the lowest stake is shed (503).
    pub queue_capacity: usize,
    pub max_body_bytes: usize,
    pub images: ImageLimits,
    pub connections: ConnLimits,
    pub fallback_prediction: f32,
    /// JSON-lines prediction log; low-confidence images go to `low_confidence/` beside it.
    pub prediction_log: Option<PathBuf>,
    /// Disk cap of the low-confidence image folder.
    pub low_confidence_cap_bytes: u64,
    /// Time allowed to receive the body once the checks passed.
    pub body_read_timeout: Duration,
    /// Size cap of the request head (hyper's read buffer; 8 KiB at least).
    pub max_header_bytes: usize,
    /// Every accepted query is answered within this of its head (validators stop at 9 s).
    pub answer_deadline: Duration,
    /// Send the image back in the response body as the Python axon does (doubles traffic).
    pub echo_image: bool,
    /// In-flight requests get this long to finish at shutdown.
    pub shutdown_grace: Duration,
    /// How often the metagraph file is checked for changes.
    pub metagraph_poll: Duration,
    pub max_nonce_keys: usize,
    /// Log lines per rejection reason per second.
    pub rejection_log_per_s: u32,
    /// Shut down on SIGINT/SIGTERM.
    pub handle_signals: bool,
    /// The VLM judge asked about answers in its band (`judge:` in the config), within what is
    /// left of the answer deadline.
    pub judge: Option<std::sync::Arc<crate::judge::Judge>>,
}

impl ServeOptions {
    /// Options from the `serve:` config section; a bad value is an error naming its key.
    pub fn from_config(c: &ServeConfig, axon_hotkey: String) -> Result<Self> {
        ss58_decode(&axon_hotkey)
            .with_context(|| format!("our hotkey {axon_hotkey:?} is not a valid SS58 address"))?;
        for (key, v) in [
            ("serve.max_batch", c.max_batch),
            ("serve.queue_capacity", c.queue_capacity),
            ("serve.max_connections", c.max_connections),
            ("serve.max_connections_per_ip", c.max_connections_per_ip),
            ("serve.max_large_images", c.max_large_images),
            ("serve.max_small_images", c.max_small_images),
            ("serve.max_nonce_keys", c.max_nonce_keys),
        ] {
            if v == 0 {
                bail!("{key} must be at least 1");
            }
        }
        for (key, v) in [
            ("serve.answer_deadline_ms", c.answer_deadline_ms),
            ("serve.header_timeout_ms", c.header_timeout_ms),
            ("serve.idle_timeout_ms", c.idle_timeout_ms),
            ("serve.body_timeout_ms", c.body_timeout_ms),
            ("serve.metagraph_poll_ms", c.metagraph_poll_ms),
        ] {
            if v == 0 {
                bail!("{key} must be above 0");
            }
        }
        if !(0.0..=1.0).contains(&c.fallback_prediction) {
            bail!(
                "serve.fallback_prediction = {} must be within [0, 1]",
                c.fallback_prediction
            );
        }
        if c.max_body_bytes < 1024 {
            bail!(
                "serve.max_body_bytes = {} is too small (at least 1024)",
                c.max_body_bytes
            );
        }
        let ip: std::net::IpAddr = c
            .host
            .parse()
            .with_context(|| format!("serve.host = {:?} is not an IP address", c.host))?;
        let ms = Duration::from_millis;
        Ok(Self {
            addr: SocketAddr::new(ip, c.port),
            axon_hotkey,
            min_stake: c.min_stake,
            max_batch: c.max_batch,
            max_wait: ms(c.max_wait_ms),
            queue_capacity: c.queue_capacity,
            max_body_bytes: c.max_body_bytes,
            images: ImageLimits {
                // base64 carries 3 bytes in 4 characters, so no image file can be larger.
                max_bytes: c.max_body_bytes / 4 * 3,
                max_pixels: c.max_image_pixels,
                large_pixels: c.large_image_pixels.min(c.max_image_pixels),
                max_large: c.max_large_images,
                max_small: c.max_small_images,
            },
            connections: ConnLimits {
                max_connections: c.max_connections,
                max_per_ip: c.max_connections_per_ip,
                header_timeout: ms(c.header_timeout_ms),
                idle_timeout: ms(c.idle_timeout_ms),
            },
            fallback_prediction: c.fallback_prediction as f32,
            prediction_log: Some(c.prediction_log.clone()),
            low_confidence_cap_bytes: c.low_confidence_cap_mb.saturating_mul(1 << 20),
            body_read_timeout: ms(c.body_timeout_ms),
            max_header_bytes: c.max_header_bytes,
            answer_deadline: ms(c.answer_deadline_ms),
            echo_image: c.echo_image,
            shutdown_grace: ms(c.shutdown_grace_ms),
            metagraph_poll: ms(c.metagraph_poll_ms),
            max_nonce_keys: c.max_nonce_keys,
            rejection_log_per_s: c.rejection_log_per_s,
            handle_signals: false,
            judge: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_their_key() {
        let hotkey = crate::keys::ss58_encode(&[7; 32], 42);
        let ok = ServeOptions::from_config(&ServeConfig::default(), hotkey.clone()).unwrap();
        assert_eq!(ok.connections.idle_timeout, Duration::from_secs(20));
        assert_eq!(ok.images.max_pixels, 16 * 1024 * 1024);
        for (c, key) in [
            (
                ServeConfig {
                    max_connections_per_ip: 0,
                    ..Default::default()
                },
                "serve.max_connections_per_ip",
            ),
            (
                ServeConfig {
                    header_timeout_ms: 0,
                    ..Default::default()
                },
                "serve.header_timeout_ms",
            ),
            (
                ServeConfig {
                    fallback_prediction: -1.0,
                    ..Default::default()
                },
                "serve.fallback_prediction",
            ),
        ] {
            let e = ServeOptions::from_config(&c, hotkey.clone()).unwrap_err();
            assert!(format!("{e:#}").contains(key), "{e:#}");
        }
    }
}
