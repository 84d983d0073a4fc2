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
    /// For a revoked key: the last entry it may have chained (entries after it fail).
    /// Absent: every entry chained with it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revoked_after_seq: Option<u64>,
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
                    created_at: now_text(),
                    revoked_after_seq: None,
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
        let mut key = HmacKey::new(&secret, k.status)
            .map_err(|e| anyhow::anyhow!("{source}: keys[{i}]: {e}"))?;
        if k.revoked_after_seq.is_some() && k.status != KeyStatus::Revoked {
            bail!("{source}: keys[{i}].revoked_after_seq is set but the key is not revoked");
        }
        key.revoked_after_seq = k.revoked_after_seq;
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
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    if !key_mode_acceptable(meta.uid(), meta.mode()) {
        bail!(
            "{} is readable by other users (mode {:o}); run `chmod 600 {}` (a root-owned file may \
             be at most 0640)",
            path.display(),
            meta.mode() & 0o777,
            path.display()
        );
    }
    Ok(())
}

/// Whether a key file's owner and mode keep it private. Owned by anyone but root: no
/// access for group or others (0600 or stricter). Owned by root: at most owner
/// read-write and group read (0640), the rule PostgreSQL applies to its TLS key. That is
/// what a Kubernetes Secret volume with an `fsGroup` looks like (root, the pod's group,
/// 0440), and the only way a non-root server can read a mounted Secret.
#[cfg(unix)]
fn key_mode_acceptable(uid: u32, mode: u32) -> bool {
    let forbidden = if uid == 0 { 0o137 } else { 0o077 };
    mode & 0o777 & forbidden == 0
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
    /// Earlier public keys: their checkpoints and tokens still verify; they never sign.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    retired: Vec<RetiredSigningKey>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RetiredSigningKey {
    public: String,
    retired_at: String,
}

fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Replaces a secret file atomically: a 0600 temporary file in the same directory,
/// synced, then renamed over the old one, so a crash leaves the old or the new file.
fn replace_secret_file(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().context("key file has no parent directory")?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("key")
    ));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    restrict(&tmp, 0o600)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn read_key_file(path: &Path) -> anyhow::Result<KeyFile> {
    check_permissions(path)?;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text, &path.display().to_string())?;
    Ok(serde_json::from_str(&text)?)
}

/// `keys rotate --hmac`: a new random active key; the old active key is retired (it
/// still verifies the entries it chained, and never signs again). Returns (old, new) ids.
pub fn rotate_hmac(path: &Path) -> anyhow::Result<(String, String)> {
    let mut file = read_key_file(path)?;
    let fresh: KeyFile = serde_json::from_str(&generate())?;
    let new = fresh.keys.into_iter().next().expect("one generated key");
    if file.keys.iter().any(|k| k.id == new.id) {
        bail!("the generated key collides with an existing one; run the command again");
    }
    let mut old = String::new();
    for k in &mut file.keys {
        if k.status == KeyStatus::Active {
            k.status = KeyStatus::Retired;
            old = k.id.clone();
        }
    }
    let new_id = new.id.clone();
    file.keys.push(new);
    let text = serde_json::to_string_pretty(&file)? + "\n";
    parse(&text, &path.display().to_string())?;
    replace_secret_file(path, &text)?;
    Ok((old, new_id))
}

/// `keys revoke --hmac ID`: entries chained with the key after `after_seq` (or all of
/// them) fail verification from now on. The active key cannot be revoked: rotate first.
pub fn revoke_hmac(path: &Path, id: &str, after_seq: Option<u64>) -> anyhow::Result<()> {
    let mut file = read_key_file(path)?;
    let Some(k) = file.keys.iter_mut().find(|k| k.id == id) else {
        bail!("{}: no key with id {id}", path.display());
    };
    if k.status == KeyStatus::Active {
        bail!("key {id} is the active key; run `arbiter keys rotate --hmac` first, then revoke it");
    }
    k.status = KeyStatus::Revoked;
    k.revoked_after_seq = after_seq;
    let text = serde_json::to_string_pretty(&file)? + "\n";
    parse(&text, &path.display().to_string())?;
    replace_secret_file(path, &text)
}

/// `keys rotate --signing`: a new checkpoint and token signing key for the same log
/// origin; the old public key is kept as retired (listed in `signing.pub`). Returns the
/// (old, new) public keys in hex.
pub fn rotate_signing(path: &Path) -> anyhow::Result<(String, String)> {
    check_permissions(path)?;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut f: SigningFile =
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let old = std::mem::replace(&mut f.public, hex::encode(key.verifying_key().as_bytes()));
    f.retired.insert(
        0,
        RetiredSigningKey {
            public: old.clone(),
            retired_at: now_text(),
        },
    );
    f.secret = hex::encode(key.to_bytes());
    f.created_at = now_text();
    replace_secret_file(path, &serde_json::to_string_pretty(&f)?)?;
    write_public(path, &f)?;
    Ok((old, f.public))
}

/// Public keys of retired signing keys (they verify, never sign).
pub fn retired_signing_keys(path: &Path) -> anyhow::Result<Vec<ed25519_dalek::VerifyingKey>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let f: SigningFile =
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
    f.retired
        .iter()
        .enumerate()
        .map(|(i, r)| {
            hex::decode(&r.public)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .and_then(|b| ed25519_dalek::VerifyingKey::from_bytes(&b).ok())
                .with_context(|| {
                    format!(
                        "{}: retired[{i}].public is not an Ed25519 public key",
                        path.display()
                    )
                })
        })
        .collect()
}

/// `signing.pub`: the origin line, the active public key, then retired ones (hex).
fn write_public(path: &Path, f: &SigningFile) -> anyhow::Result<()> {
    let mut text = format!("{}\n{}\n", f.origin, f.public);
    for r in &f.retired {
        text.push_str(&r.public);
        text.push('\n');
    }
    std::fs::write(path.with_file_name("signing.pub"), text)
        .with_context(|| format!("writing {}", path.with_file_name("signing.pub").display()))
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
        created_at: now_text(),
        retired: Vec::new(),
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
    write_public(path, &file)?;
    Ok((crate::audit::TreeSigner { origin, key }, true))
}

#[cfg(all(test, unix))]
mod tests {
    use super::key_mode_acceptable;

    #[test]
    fn key_files_are_private_to_their_owner_or_root_and_one_group() {
        // The server's own files.
        assert!(key_mode_acceptable(1000, 0o600));
        assert!(key_mode_acceptable(1000, 0o400));
        assert!(!key_mode_acceptable(1000, 0o640));
        assert!(!key_mode_acceptable(1000, 0o440));
        assert!(!key_mode_acceptable(1000, 0o604));
        // A Kubernetes Secret mounted with fsGroup: root-owned, group-readable.
        assert!(key_mode_acceptable(0, 0o440));
        assert!(key_mode_acceptable(0, 0o640));
        assert!(key_mode_acceptable(0, 0o600));
        assert!(!key_mode_acceptable(0, 0o660));
        assert!(!key_mode_acceptable(0, 0o644));
        assert!(!key_mode_acceptable(0, 0o444));
        // File-type bits in st_mode do not matter.
        assert!(key_mode_acceptable(1000, 0o100600));
    }
}
