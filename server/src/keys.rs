//! The HMAC key ring file (`<data dir>/keys/hmac.json`, mode 0600). Format in
//! docs/audit-format.md.

use crate::audit::{HmacKey, KeyRing, KeyStatus};
use anyhow::{bail, Context};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

#[derive(Debug, Serialize, Deserialize)]
struct KeyFile {
    keys: Vec<KeyEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct KeyEntry {
    id: String,
    secret: String,
    status: KeyStatus,
    created_at: String,
}

/// A new key ring with one random active key, as JSON.
pub fn generate() -> String {
    let mut secret = [0u8; 32];
    loop {
        rand::rngs::OsRng.fill_bytes(&mut secret);
        // Random keys pass the weak-key rule with overwhelming probability.
        if let Ok(key) = HmacKey::new(&secret, KeyStatus::Active) {
            let file = KeyFile {
                keys: vec![KeyEntry {
                    id: key.id.clone(),
                    secret: key.secret_hex(),
                    status: KeyStatus::Active,
                    created_at: chrono::Utc::now()
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                }],
            };
            return serde_json::to_string_pretty(&file).expect("key file serializes") + "\n";
        }
    }
}

pub fn parse(text: &str, source: &str) -> anyhow::Result<KeyRing> {
    let file: KeyFile =
        serde_json::from_str(text).with_context(|| format!("reading key ring {source}"))?;
    let mut keys = Vec::new();
    for (i, k) in file.keys.iter().enumerate() {
        let secret = hex::decode(&k.secret)
            .with_context(|| format!("{source}: keys[{i}].secret is not hex"))?;
        let key = HmacKey::new(&secret, k.status)
            .map_err(|e| anyhow::anyhow!("{source}: keys[{i}]: {e}"))?;
        if key.id != k.id {
            bail!(
                "{source}: keys[{i}].id is {:?} but the secret's id is {:?}",
                k.id,
                key.id
            );
        }
        keys.push(key);
    }
    KeyRing::new(keys).map_err(|e| anyhow::anyhow!("{source}: {e}"))
}

/// Loads the key ring, generating development keys on first start. Returns whether
/// it generated them.
pub fn load_or_generate(path: &Path) -> anyhow::Result<(KeyRing, bool)> {
    if path.exists() {
        check_permissions(path)?;
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        return Ok((parse(&text, &path.display().to_string())?, false));
    }
    let dir = path.parent().context("key file has no parent directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    restrict(dir, 0o700)?;
    let text = generate();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    restrict(path, 0o600)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok((parse(&text, &path.display().to_string())?, true))
}

#[cfg(unix)]
fn restrict(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("restricting permissions of {}", path.display()))
}

#[cfg(not(unix))]
fn restrict(_path: &Path, _mode: u32) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn check_permissions(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        bail!(
            "{} is readable by other users (mode {:o}); run `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_path: &Path) -> anyhow::Result<()> {
    Ok(())
}

#[derive(Debug, Serialize, Deserialize)]
struct SigningFile {
    origin: String,
    /// 32-byte Ed25519 seed, hex.
    secret: String,
    public: String,
    created_at: String,
}

/// Loads the checkpoint signing key (`<data dir>/keys/signing.json`, 0600), generating
/// one on first start, and writes the public key next to it as `signing.pub` (hex) for
/// verifiers. Returns the signer and whether it was generated.
pub fn load_or_generate_signer(
    path: &Path,
    origin: Option<&str>,
) -> anyhow::Result<(crate::audit::TreeSigner, bool)> {
    if path.exists() {
        check_permissions(path)?;
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let f: SigningFile =
            serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
        let seed: [u8; 32] = hex::decode(&f.secret)
            .ok()
            .and_then(|v| v.try_into().ok())
            .with_context(|| format!("{}: secret must be 32 bytes of hex", path.display()))?;
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        if let Some(o) = origin.filter(|o| *o != f.origin) {
            bail!("{}: the log origin is {:?}, but the settings say {o:?}; the origin of a log never changes", path.display(), f.origin);
        }
        return Ok((
            crate::audit::TreeSigner {
                origin: f.origin,
                key,
            },
            false,
        ));
    }
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let public = hex::encode(key.verifying_key().as_bytes());
    let origin = origin
        .map(str::to_owned)
        .unwrap_or_else(|| format!("arbiter/{}", &public[..16]));
    // The origin is a line of the signed note and the key name in its signature line.
    if origin.is_empty()
        || origin
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '+')
    {
        bail!(
            "audit.origin {origin:?} must be non-empty, without spaces, control characters or '+'"
        );
    }
    let file = SigningFile {
        origin: origin.clone(),
        secret: hex::encode(key.to_bytes()),
        public: public.clone(),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    let dir = path.parent().context("key file has no parent directory")?;
    std::fs::create_dir_all(dir)?;
    restrict(dir, 0o700)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    restrict(path, 0o600)?;
    f.write_all(serde_json::to_string_pretty(&file)?.as_bytes())?;
    f.sync_all()?;
    std::fs::write(
        path.with_file_name("signing.pub"),
        format!("{origin}\n{public}\n"),
    )?;
    Ok((crate::audit::TreeSigner { origin, key }, true))
}
