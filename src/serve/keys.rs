//! Hotkeys: SS58 addresses, sr25519 signature checks, and bittensor wallet hotkey files.
//!
//! Only public key material is ever read; the miner's secret seed stays in the wallet file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use blake2::{Blake2b512, Digest};

/// SS58 address format of Bittensor (the generic substrate format 42).
pub const SS58_FORMAT: u16 = 42;
/// The signing context substrate (and so bittensor-wallet) uses for sr25519.
pub const SIGNING_CONTEXT: &[u8] = b"substrate";

fn ss58_checksum(prefix: &[u8], key: &[u8]) -> [u8; 2] {
    let mut h = Blake2b512::new();
    h.update(b"SS58PRE");
    h.update(prefix);
    h.update(key);
    let d = h.finalize();
    [d[0], d[1]]
}

fn prefix_bytes(format: u16) -> Vec<u8> {
    if format < 64 {
        vec![format as u8]
    } else {
        // Two-byte form of the SS58 spec (formats 64..16383).
        let first = (((format & 0b0000_0000_1111_1100) as u8) >> 2) | 0b0100_0000;
        let second = ((format >> 8) as u8) | (((format & 0b11) as u8) << 6);
        vec![first, second]
    }
}

/// Encodes a 32-byte public key as an SS58 address of `format`.
pub fn ss58_encode(key: &[u8; 32], format: u16) -> String {
    let prefix = prefix_bytes(format);
    let mut raw = prefix.clone();
    raw.extend_from_slice(key);
    raw.extend_from_slice(&ss58_checksum(&prefix, key));
    bs58::encode(raw).into_string()
}

/// Decodes an SS58 address into its format and 32-byte public key, checking the checksum.
pub fn ss58_decode(address: &str) -> Result<(u16, [u8; 32])> {
    let raw = bs58::decode(address)
        .into_vec()
        .map_err(|e| anyhow::anyhow!("{address:?} is not base58: {e}"))?;
    let prefix_len = match raw.first() {
        Some(b) if *b < 64 => 1,
        Some(b) if *b < 128 => 2,
        _ => bail!("{address:?} has an invalid SS58 prefix"),
    };
    if raw.len() != prefix_len + 32 + 2 {
        bail!(
            "{address:?} decodes to {} bytes; an SS58 account address has {}",
            raw.len(),
            prefix_len + 34
        );
    }
    let (prefix, rest) = raw.split_at(prefix_len);
    let (key, check) = rest.split_at(32);
    if ss58_checksum(prefix, key) != [check[0], check[1]] {
        bail!("{address:?} has a wrong SS58 checksum");
    }
    let format = if prefix_len == 1 {
        prefix[0] as u16
    } else {
        let lower = ((prefix[0] << 2) | (prefix[1] >> 6)) as u16;
        let upper = (prefix[1] & 0b0011_1111) as u16;
        lower | (upper << 8)
    };
    let mut out = [0u8; 32];
    out.copy_from_slice(key);
    Ok((format, out))
}

/// Why a signature did not verify; the text is what the Python axon puts after
/// "Not Verified with error: ".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// The signature text does not start with `0x`.
    Format,
    /// The hex after `0x` is not valid hex.
    Hex(String),
    /// Not 64 bytes, or not a well-formed schnorrkel signature.
    Invalid,
    /// The hotkey is not a valid SS58 sr25519 public key.
    BadHotkey(String),
    /// Well-formed but does not match the message.
    Mismatch,
}

impl std::fmt::Display for SignatureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignatureError::Format => write!(f, "Invalid signature format. Expected hex string."),
            SignatureError::Hex(e) => write!(f, "Invalid hex string: {e}"),
            SignatureError::Invalid => write!(f, "Invalid signature"),
            SignatureError::BadHotkey(e) => write!(f, "Invalid SS58 address: {e}"),
            SignatureError::Mismatch => write!(f, "Signature mismatch"),
        }
    }
}

/// Parses `0x` + 128 hex characters into 64 signature bytes (upper-case hex accepted).
pub fn parse_signature_hex(sig: &str) -> std::result::Result<[u8; 64], SignatureError> {
    let hex_part = sig.strip_prefix("0x").ok_or(SignatureError::Format)?;
    let bytes = hex::decode(hex_part).map_err(|e| SignatureError::Hex(e.to_string()))?;
    bytes.try_into().map_err(|_| SignatureError::Invalid)
}

/// Verifies an sr25519 signature by `ss58_hotkey` over `message` (context `substrate`), also
/// accepting the polkadot.js `<Bytes>…</Bytes>` wrapping as bittensor-wallet does.
pub fn verify_sr25519(
    ss58_hotkey: &str,
    message: &[u8],
    signature_hex: &str,
) -> std::result::Result<(), SignatureError> {
    let (_, key) =
        ss58_decode(ss58_hotkey).map_err(|e| SignatureError::BadHotkey(e.to_string()))?;
    let public = schnorrkel::PublicKey::from_bytes(&key)
        .map_err(|e| SignatureError::BadHotkey(e.to_string()))?;
    let sig_bytes = parse_signature_hex(signature_hex)?;
    let sig = schnorrkel::Signature::from_bytes(&sig_bytes).map_err(|_| SignatureError::Invalid)?;
    if public.verify_simple(SIGNING_CONTEXT, message, &sig).is_ok() {
        return Ok(());
    }
    let mut wrapped = Vec::with_capacity(message.len() + 15);
    wrapped.extend_from_slice(b"<Bytes>");
    wrapped.extend_from_slice(message);
    wrapped.extend_from_slice(b"</Bytes>");
    if public
        .verify_simple(SIGNING_CONTEXT, &wrapped, &sig)
        .is_ok()
    {
        return Ok(());
    }
    Err(SignatureError::Mismatch)
}

/// An sr25519 key pair for signing like a dendrite (test clients and `serve --selftest`).
pub struct SigningKey {
    keypair: schnorrkel::Keypair,
}

impl SigningKey {
    /// Derives a key pair from a 32-byte mini secret (substrate's Ed25519 expansion mode).
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self> {
        let mini = schnorrkel::MiniSecretKey::from_bytes(seed)
            .map_err(|e| anyhow::anyhow!("bad sr25519 seed: {e}"))?;
        Ok(Self {
            keypair: mini.expand_to_keypair(schnorrkel::ExpansionMode::Ed25519),
        })
    }

    /// The public key as an SS58 address (format 42).
    pub fn ss58(&self) -> String {
        ss58_encode(&self.keypair.public.to_bytes(), SS58_FORMAT)
    }

    /// Signs `message` and returns `0x` + lowercase hex, as the dendrite sends it.
    pub fn sign_hex(&self, message: &[u8]) -> String {
        let sig = self.keypair.sign_simple(SIGNING_CONTEXT, message);
        format!("0x{}", hex::encode(sig.to_bytes()))
    }
}

/// Default bittensor wallets folder (`~/.bittensor/wallets`).
pub fn default_wallet_path() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_default();
    PathBuf::from(home).join(".bittensor").join("wallets")
}

/// Reads the SS58 address of a wallet hotkey from `<wallets>/<name>/hotkeys/<hotkey>` (or its
/// `<hotkey>pub.txt` public file), using only the public fields `ss58Address`, `accountId` or
/// `publicKey`.
pub fn read_wallet_hotkey(wallets: &Path, name: &str, hotkey: &str) -> Result<String> {
    let dir = wallets.join(name).join("hotkeys");
    let candidates = [dir.join(hotkey), dir.join(format!("{hotkey}pub.txt"))];
    let mut errors = Vec::new();
    for path in &candidates {
        if !path.exists() {
            errors.push(format!("{} does not exist", path.display()));
            continue;
        }
        match hotkey_from_file(path) {
            Ok(a) => return Ok(a),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    bail!(
        "cannot read the hotkey of wallet {name:?}/{hotkey:?}: {}. Create it with `btcli wallet \
         new_hotkey`, fix serve.wallet_name/serve.wallet_hotkey, or pass --hotkey <SS58>",
        errors.join("; ")
    )
}

fn hotkey_from_file(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read hotkey file {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not JSON (an encrypted hotkey file? its public `pub.txt` twin is read too)",
            path.display()
        )
    })?;
    if let Some(a) = v.get("ss58Address").and_then(|a| a.as_str()) {
        ss58_decode(a).with_context(|| format!("{}: field ss58Address", path.display()))?;
        return Ok(a.to_string());
    }
    for field in ["accountId", "publicKey"] {
        if let Some(h) = v.get(field).and_then(|a| a.as_str()) {
            let bytes = hex::decode(h.trim_start_matches("0x"))
                .with_context(|| format!("{}: field {field} is not hex", path.display()))?;
            let key: [u8; 32] = bytes.try_into().map_err(|_| {
                anyhow::anyhow!("{}: field {field} is not 32 bytes", path.display())
            })?;
            return Ok(ss58_encode(&key, SS58_FORMAT));
        }
    }
    bail!(
        "{} has none of the public fields ss58Address, accountId, publicKey",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";
    const ALICE_PK: &str = "d43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d";

    #[test]
    fn ss58_round_trip_matches_known_address() {
        let (fmt, key) = ss58_decode(ALICE).unwrap();
        assert_eq!(fmt, 42);
        assert_eq!(hex::encode(key), ALICE_PK);
        assert_eq!(ss58_encode(&key, 42), ALICE);
        // Two-byte prefixes round-trip too.
        let a = ss58_encode(&key, 1000);
        assert_eq!(ss58_decode(&a).unwrap(), (1000, key));
    }

    #[test]
    fn ss58_rejects_bad_checksum_and_length() {
        let mut bad = ALICE.to_string();
        bad.replace_range(10..11, if &ALICE[10..11] == "z" { "y" } else { "z" });
        assert!(ss58_decode(&bad).is_err());
        assert!(ss58_decode("5Grwva").is_err());
        assert!(ss58_decode("0OIl").is_err());
    }

    #[test]
    fn signature_format_errors_match_python_texts() {
        assert_eq!(
            parse_signature_hex("abcd").unwrap_err().to_string(),
            "Invalid signature format. Expected hex string."
        );
        assert!(parse_signature_hex("0xzz")
            .unwrap_err()
            .to_string()
            .starts_with("Invalid hex string"));
        assert_eq!(
            parse_signature_hex("0xabcd").unwrap_err(),
            SignatureError::Invalid
        );
        assert!(parse_signature_hex(&format!("0x{}", "AB".repeat(64))).is_ok());
    }

    #[test]
    fn wallet_hotkey_file_public_fields() {
        let dir = tempfile::tempdir().unwrap();
        let hk = dir.path().join("w").join("hotkeys");
        std::fs::create_dir_all(&hk).unwrap();
        std::fs::write(hk.join("h1"), format!(r#"{{"ss58Address":"{ALICE}"}}"#)).unwrap();
        std::fs::write(hk.join("h2"), format!(r#"{{"accountId":"0x{ALICE_PK}"}}"#)).unwrap();
        std::fs::write(hk.join("h3"), b"\x01\x02encrypted").unwrap();
        std::fs::write(
            hk.join("h3pub.txt"),
            format!(r#"{{"publicKey":"0x{ALICE_PK}"}}"#),
        )
        .unwrap();
        std::fs::write(hk.join("h4"), b"{}").unwrap();
        assert_eq!(read_wallet_hotkey(dir.path(), "w", "h1").unwrap(), ALICE);
        assert_eq!(read_wallet_hotkey(dir.path(), "w", "h2").unwrap(), ALICE);
        assert_eq!(read_wallet_hotkey(dir.path(), "w", "h3").unwrap(), ALICE);
        let e = format!(
            "{:#}",
            read_wallet_hotkey(dir.path(), "w", "h4").unwrap_err()
        );
        assert!(e.contains("ss58Address") && e.contains("--hotkey"), "{e}");
        let e = format!(
            "{:#}",
            read_wallet_hotkey(dir.path(), "w", "nope").unwrap_err()
        );
        assert!(e.contains("does not exist"), "{e}");
    }

    #[test]
    fn sign_then_verify_and_mismatch() {
        let k = SigningKey::from_seed(&[7u8; 32]).unwrap();
        let sig = k.sign_hex(b"hello");
        assert!(verify_sr25519(&k.ss58(), b"hello", &sig).is_ok());
        assert_eq!(
            verify_sr25519(&k.ss58(), b"hellO", &sig),
            Err(SignatureError::Mismatch)
        );
        let other = SigningKey::from_seed(&[8u8; 32]).unwrap();
        assert_eq!(
            verify_sr25519(&other.ss58(), b"hello", &sig),
            Err(SignatureError::Mismatch)
        );
    }
}
