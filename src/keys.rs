//! Hotkeys: SS58 addresses, sr25519 signature checks, and bittensor wallet hotkey files.
//!
//! `serve` reads only public key material. `register` unlocks the secret with
//! [`load_wallet_signing_key`]; the secret then lives only in zeroized memory and is never printed.

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

impl std::fmt::Debug for SigningKey {
    // Only the public half: the secret must never reach a log through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.ss58())
            .finish_non_exhaustive()
    }
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

    /// The raw 64-byte sr25519 signature over `message` (context `substrate`), as bittensor-wallet's
    /// `Keypair.sign` returns it (no `<Bytes>` wrapping).
    pub fn sign_bytes(&self, message: &[u8]) -> [u8; 64] {
        self.keypair
            .sign_simple(SIGNING_CONTEXT, message)
            .to_bytes()
    }

    /// The 32-byte public key.
    pub fn public_bytes(&self) -> [u8; 32] {
        self.keypair.public.to_bytes()
    }

    /// A key pair from a 64-byte expanded secret (`privateKey` of a hotkey file). Substrate's
    /// `from_seed_slice` reads it with schnorrkel's canonical `SecretKey::from_bytes`, while keys
    /// written by the older Python stack hold the ed25519-style encoding; both are tried and the
    /// one whose public key equals `expected_public` wins (the canonical form when none is given).
    pub fn from_private_key(secret: &[u8], expected_public: Option<&[u8; 32]>) -> Result<Self> {
        if secret.len() != 64 {
            bail!(
                "privateKey is {} bytes; an sr25519 expanded secret key is 64",
                secret.len()
            );
        }
        let mut candidates = Vec::with_capacity(2);
        if let Ok(k) = schnorrkel::SecretKey::from_bytes(secret) {
            candidates.push(k);
        }
        if let Ok(k) = schnorrkel::SecretKey::from_ed25519_bytes(secret) {
            candidates.push(k);
        }
        if candidates.is_empty() {
            bail!("privateKey is not a valid sr25519 secret key");
        }
        for k in candidates {
            let keypair = k.to_keypair();
            match expected_public {
                Some(p) if keypair.public.to_bytes() != *p => {}
                _ => return Ok(Self { keypair }),
            }
        }
        bail!("privateKey does not belong to the public key stated in the file")
    }
}

/// Passes of the `$NACL` format's argon2i: libsodium `OPSLIMIT_SENSITIVE`.
const NACL_OPSLIMIT: u32 = 8;
/// libsodium `MEMLIMIT_SENSITIVE` (512 MiB) in KiB, as the argon2 crate counts memory.
const NACL_MEMLIMIT_KIB: u32 = 512 * 1024;
/// The fixed salt bittensor-wallet uses for every `$NACL` keyfile (src/keyfile.rs `NACL_SALT`).
const NACL_SALT: &[u8; 16] = b"\x13q\x83\xdf\xf1Z\t\xbc\x9c\x90\xb5Q\x879\xe9\xb1";

/// How a hotkey file stores its secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyfileFormat {
    /// Plain JSON.
    Json,
    /// bittensor-wallet's `$NACL` format (argon2i + XSalsa20-Poly1305 secretbox).
    Nacl,
    /// `$ANSIBLE_VAULT` (old bittensor).
    AnsibleVault,
    /// Legacy Fernet (`gAAAAA…`, old bittensor).
    Fernet,
}

/// Detects the format of hotkey file bytes by their prefix, as bittensor-wallet does.
pub fn keyfile_format(data: &[u8]) -> KeyfileFormat {
    if data.starts_with(b"$NACL") {
        KeyfileFormat::Nacl
    } else if data.starts_with(b"$ANSIBLE_VAULT") {
        KeyfileFormat::AnsibleVault
    } else if data.starts_with(b"gAAAAA") {
        KeyfileFormat::Fernet
    } else {
        KeyfileFormat::Json
    }
}

/// Decrypts a `$NACL` keyfile: `$NACL` + 24-byte nonce + secretbox (MAC first), with the key
/// derived by argon2i v1.3 (opslimit/memlimit "sensitive", one lane) from `password` and the
/// fixed salt. A wrong password is an error that says so; nothing secret is in it.
pub fn decrypt_nacl_keyfile(data: &[u8], password: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    use crypto_secretbox::aead::{Aead, KeyInit};
    use crypto_secretbox::XSalsa20Poly1305;

    let body = data
        .strip_prefix(b"$NACL")
        .context("not a $NACL encrypted keyfile")?;
    if body.len() < 24 + 16 {
        bail!(
            "the $NACL keyfile is truncated ({} bytes after the header)",
            body.len()
        );
    }
    let (nonce, sealed) = body.split_at(24);
    let params = argon2::Params::new(NACL_MEMLIMIT_KIB, NACL_OPSLIMIT, 1, Some(32))
        .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
    let kdf = argon2::Argon2::new(argon2::Algorithm::Argon2i, argon2::Version::V0x13, params);
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    kdf.hash_password_into(password, NACL_SALT, key.as_mut())
        .map_err(|e| anyhow::anyhow!("argon2 key derivation failed: {e}"))?;
    let cipher = XSalsa20Poly1305::new(crypto_secretbox::Key::from_slice(key.as_ref()));
    let plain = cipher
        .decrypt(crypto_secretbox::Nonce::from_slice(nonce), sealed)
        .map_err(|_| {
            anyhow::anyhow!("wrong password for the encrypted hotkey file (or the file is damaged)")
        })?;
    Ok(zeroize::Zeroizing::new(plain))
}

/// The substrate mini secret of a BIP39 mnemonic: PBKDF2-HMAC-SHA512 over the mnemonic's
/// entropy with salt `"mnemonic" + password`, 2048 rounds, first 32 bytes (substrate-bip39).
pub fn mini_secret_from_mnemonic(
    phrase: &str,
    password: &str,
) -> Result<zeroize::Zeroizing<[u8; 32]>> {
    let normalized = phrase.split_whitespace().collect::<Vec<_>>().join(" ");
    let mnemonic = bip39::Mnemonic::parse_in_normalized(bip39::Language::English, &normalized)
        .map_err(|e| anyhow::anyhow!("secretPhrase is not a valid English BIP39 mnemonic: {e}"))?;
    let entropy = zeroize::Zeroizing::new(mnemonic.to_entropy());
    let salt = zeroize::Zeroizing::new(format!("mnemonic{password}"));
    let mut seed = zeroize::Zeroizing::new([0u8; 64]);
    pbkdf2::pbkdf2_hmac::<sha2::Sha512>(&entropy, salt.as_bytes(), 2048, seed.as_mut());
    let mut out = zeroize::Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&seed[..32]);
    Ok(out)
}

fn json_str<'a>(v: &'a serde_json::Value, field: &str) -> Option<&'a str> {
    v.get(field)
        .and_then(|a| a.as_str())
        .filter(|s| !s.is_empty())
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    hex::decode(s.trim_start_matches("0x"))
        .ok()
        .and_then(|b| b.try_into().ok())
}

/// Builds the signing key of a decrypted hotkey JSON (`secretPhrase`, else `secretSeed`, else
/// `privateKey`, the order bittensor-wallet reads them in) and checks that its public key equals
/// the file's `ss58Address`/`publicKey`/`accountId`. `origin` names the file in errors; no error
/// contains secret material.
pub fn signing_key_from_keyfile_json(json: &[u8], origin: &str) -> Result<SigningKey> {
    let v: serde_json::Value = serde_json::from_slice(json).map_err(|_| {
        anyhow::anyhow!(
            "{origin} is not a bittensor hotkey file (neither JSON nor a known encryption)"
        )
    })?;
    let stated: Option<[u8; 32]> = match json_str(&v, "ss58Address") {
        Some(a) => Some(
            ss58_decode(a)
                .with_context(|| format!("{origin}: field ss58Address"))?
                .1,
        ),
        None => json_str(&v, "publicKey")
            .or_else(|| json_str(&v, "accountId"))
            .map(|h| {
                hex32(h)
                    .with_context(|| format!("{origin}: publicKey/accountId is not 32 hex bytes"))
            })
            .transpose()?,
    };
    let (key, field) = if let Some(phrase) = json_str(&v, "secretPhrase") {
        let mini = mini_secret_from_mnemonic(phrase, "").with_context(|| origin.to_string())?;
        (SigningKey::from_seed(&mini)?, "secretPhrase")
    } else if let Some(seed) = json_str(&v, "secretSeed") {
        let bytes = zeroize::Zeroizing::new(
            hex::decode(seed.trim_start_matches("0x"))
                .map_err(|_| anyhow::anyhow!("{origin}: field secretSeed is not hex"))?,
        );
        let mini: &[u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            anyhow::anyhow!(
                "{origin}: field secretSeed is {} bytes, not 32",
                bytes.len()
            )
        })?;
        (SigningKey::from_seed(mini)?, "secretSeed")
    } else if let Some(pk) = json_str(&v, "privateKey") {
        let bytes = zeroize::Zeroizing::new(
            hex::decode(pk.trim_start_matches("0x"))
                .map_err(|_| anyhow::anyhow!("{origin}: field privateKey is not hex"))?,
        );
        (
            SigningKey::from_private_key(&bytes, stated.as_ref())
                .with_context(|| origin.to_string())?,
            "privateKey",
        )
    } else {
        bail!(
            "{origin} holds no secret (none of secretPhrase, secretSeed, privateKey): it is a public \
             key file. Point --wallet/--wallet-hotkey at the hotkey file itself"
        );
    };
    if let Some(p) = stated {
        if key.public_bytes() != p {
            bail!(
                "{origin}: the key derived from {field} is {} but the file states {}; the file is \
                 inconsistent, regenerate it with `btcli wallet regen_hotkey`",
                key.ss58(),
                ss58_encode(&p, SS58_FORMAT)
            );
        }
    }
    Ok(key)
}

/// Path of a wallet's hotkey file: `<wallets>/<name>/hotkeys/<hotkey>`.
pub fn hotkey_file_path(wallets: &Path, name: &str, hotkey: &str) -> PathBuf {
    wallets.join(name).join("hotkeys").join(hotkey)
}

/// Loads the signing key of wallet hotkey `<wallets>/<name>/hotkeys/<hotkey>`. For an encrypted
/// (`$NACL`) file `password` is called once to get the password; unencrypted files never call it.
pub fn load_wallet_signing_key(
    wallets: &Path,
    name: &str,
    hotkey: &str,
    password: &mut dyn FnMut() -> Result<zeroize::Zeroizing<String>>,
) -> Result<SigningKey> {
    let path = hotkey_file_path(wallets, name, hotkey);
    let origin = path.display().to_string();
    let data = zeroize::Zeroizing::new(std::fs::read(&path).with_context(|| {
        format!(
            "cannot read hotkey file {origin}. Create it with `btcli wallet new_hotkey`, or fix \
             --wallet/--wallet-hotkey/--wallets-path"
        )
    })?);
    match keyfile_format(&data) {
        KeyfileFormat::Json => signing_key_from_keyfile_json(&data, &origin),
        KeyfileFormat::Nacl => {
            let pw = password()?;
            let plain = decrypt_nacl_keyfile(&data, pw.as_bytes())
                .with_context(|| format!("cannot unlock {origin}"))?;
            signing_key_from_keyfile_json(&plain, &origin)
        }
        KeyfileFormat::AnsibleVault => bail!(
            "{origin} is encrypted with ansible-vault (an old bittensor format), which sv72 does \
             not read. Re-encrypt it with a current btcli (`btcli wallet regen_hotkey`)"
        ),
        KeyfileFormat::Fernet => bail!(
            "{origin} uses the legacy Fernet encryption of old bittensor, which sv72 does not \
             read. Re-encrypt it with a current btcli (`btcli wallet regen_hotkey`)"
        ),
    }
}

/// Reads a password from the controlling terminal without echo. `Ok(None)` when there is no
/// terminal (cron, CI), so callers can say how to pass it instead.
pub fn prompt_password(prompt: &str) -> Result<Option<zeroize::Zeroizing<String>>> {
    use std::io::{BufRead, Write};
    use std::os::fd::AsRawFd;

    let Ok(tty) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
    else {
        return Ok(None);
    };
    let fd = tty.as_raw_fd();
    // SAFETY: termios is plain data; tcgetattr fills it for a valid open fd.
    let mut term: libc::termios = unsafe { std::mem::zeroed() };
    if unsafe { libc::tcgetattr(fd, &mut term) } != 0 {
        return Ok(None);
    }
    let saved = term;
    term.c_lflag &= !libc::ECHO;
    term.c_lflag |= libc::ECHONL;
    // SAFETY: fd is valid and term was initialised by tcgetattr.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &term) };
    let mut out = &tty;
    let _ = write!(out, "{prompt}");
    let _ = out.flush();
    let mut line = zeroize::Zeroizing::new(String::new());
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    // SAFETY: restores the settings read above on the same fd.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    read.context("cannot read the password from the terminal")?;
    // bittensor-wallet trims the password it encrypts with, so the same is done here.
    let trimmed = zeroize::Zeroizing::new(line.trim().to_string());
    Ok(Some(trimmed))
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
