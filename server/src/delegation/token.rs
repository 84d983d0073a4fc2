//! Token bytes: `arbiter-dt1.` + base64url(JCS payload) + `.` + base64url(signature),
//! signature = Ed25519(`DOMAIN` ‖ payload) with the log's signing key. The domain prefix
//! keeps a token signature from ever being mistaken for a checkpoint signature.

use crate::audit::canonical::canonical_string;
use crate::domain::{ApiPattern, GlobList};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

pub const TOKEN_PREFIX: &str = "arbiter-dt1.";
const DOMAIN: &[u8] = b"arbiter-delegation-token-v1\n";

/// What a token grants. Every field is covered by the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub v: u32,
    pub id: String,
    /// The log origin of the Arbiter that signed it.
    pub origin: String,
    /// Hex key id (as in checkpoint signatures) of the signing key.
    pub kid: String,
    /// Every agent that delegated along the chain, root first.
    pub issuers: Vec<String>,
    /// The agent that may use the token.
    pub sub: String,
    pub tools: Vec<String>,
    pub apis: Vec<String>,
    pub iat_ms: i64,
    pub exp_ms: i64,
    /// Further delegations allowed from this token.
    pub depth: u32,
    /// Id of the token this one narrows, if any.
    pub parent: Option<String>,
}

/// Why a token string was not accepted. Expiry and subject are checked by the
/// pipeline against its own clock and request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFault(pub String);

/// A token whose signature verified, with its scope compiled.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    pub grant: Grant,
    pub tools: GlobList,
    pub apis: Vec<ApiPattern>,
}

/// The outcome of reading a presented token.
#[derive(Debug, Clone)]
pub enum TokenCheck {
    Valid(Box<VerifiedToken>),
    /// Malformed, signed by a key this log does not trust, or altered.
    Forged(TokenFault),
}

/// The keys tokens are signed and checked with: the active checkpoint signing key,
/// plus retired public keys whose tokens still verify until they expire.
#[derive(Clone)]
pub struct TokenKeys {
    origin: String,
    signing: SigningKey,
    verifying: Vec<VerifyingKey>,
}

impl TokenKeys {
    pub fn new(origin: String, signing: SigningKey, retired: Vec<VerifyingKey>) -> Self {
        let mut verifying = vec![signing.verifying_key()];
        verifying.extend(retired);
        Self {
            origin,
            signing,
            verifying,
        }
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn active_kid(&self) -> String {
        kid(&self.origin, &self.signing.verifying_key())
    }

    pub fn sign(&self, grant: &Grant) -> String {
        // Issuing wrote the grant's numbers to the log first, so they are within the
        // range JCS writes exactly and the payload always has a canonical form.
        let payload = canonical_payload(grant).expect("an issued grant has a canonical form");
        let mut msg = DOMAIN.to_vec();
        msg.extend_from_slice(payload.as_bytes());
        let sig = self.signing.sign(&msg);
        format!(
            "{TOKEN_PREFIX}{}.{}",
            B64.encode(payload.as_bytes()),
            B64.encode(sig.to_bytes())
        )
    }

    /// Checks the bytes and the signature; never looks at the clock or the request.
    pub fn check(&self, token: &str) -> TokenCheck {
        match self.verify(token) {
            Ok(t) => TokenCheck::Valid(Box::new(t)),
            Err(f) => TokenCheck::Forged(f),
        }
    }

    pub fn verify(&self, token: &str) -> Result<VerifiedToken, TokenFault> {
        let fault = |m: &str| TokenFault(m.to_owned());
        let rest = token
            .strip_prefix(TOKEN_PREFIX)
            .ok_or_else(|| fault("not an arbiter delegation token (wrong prefix)"))?;
        let (payload_b64, sig_b64) = rest
            .split_once('.')
            .ok_or_else(|| fault("malformed token (expected payload.signature)"))?;
        let payload = B64
            .decode(payload_b64)
            .map_err(|_| fault("malformed token payload (not base64url)"))?;
        let sig: [u8; 64] = B64
            .decode(sig_b64)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| fault("malformed token signature"))?;
        let grant: Grant = serde_json::from_slice(&payload)
            .map_err(|e| TokenFault(format!("malformed token payload: {e}")))?;
        if grant.v != 1 {
            return Err(TokenFault(format!("unsupported token version {}", grant.v)));
        }
        if grant.origin != self.origin {
            return Err(TokenFault(format!(
                "token was issued by log {:?}, not this one",
                grant.origin
            )));
        }
        let key = self
            .verifying
            .iter()
            .find(|k| kid(&self.origin, k) == grant.kid)
            .ok_or_else(|| TokenFault(format!("token key {} is not trusted here", grant.kid)))?;
        let mut msg = DOMAIN.to_vec();
        msg.extend_from_slice(&payload);
        key.verify(&msg, &Signature::from_bytes(&sig))
            .map_err(|_| fault("token signature does not verify (altered or forged)"))?;
        if canonical_payload(&grant).ok().as_deref().map(str::as_bytes) != Some(payload.as_slice())
        {
            return Err(fault("token payload is not canonical"));
        }
        compile(grant).map_err(TokenFault)
    }
}

/// Compiles a grant's patterns (they were validated at issue; this guards old tokens).
pub fn compile(grant: Grant) -> Result<VerifiedToken, String> {
    let tools = GlobList::new(&grant.tools, false)?;
    let apis = grant
        .apis
        .iter()
        .map(|a| ApiPattern::parse(a))
        .collect::<Result<_, _>>()?;
    Ok(VerifiedToken { grant, tools, apis })
}

fn kid(origin: &str, key: &VerifyingKey) -> String {
    hex::encode(crate::audit::checkpoint::key_id(origin, key))
}

/// The JCS bytes of a grant; `Err` when a number is beyond what JCS writes exactly
/// (only a payload read from a presented token can hold one).
fn canonical_payload(grant: &Grant) -> Result<String, String> {
    let value = serde_json::to_value(grant).map_err(|e| e.to_string())?;
    canonical_string(&value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(
            "test/log".into(),
            SigningKey::from_bytes(&[7; 32]),
            Vec::new(),
        )
    }

    fn grant(k: &TokenKeys) -> Grant {
        Grant {
            v: 1,
            id: "dt_1".into(),
            origin: k.origin().into(),
            kid: k.active_kid(),
            issuers: vec!["planner".into()],
            sub: "worker".into(),
            tools: vec!["crm.read*".into()],
            apis: vec!["GET https://api.example.com/**".into()],
            iat_ms: 1,
            exp_ms: 2,
            depth: 0,
            parent: None,
        }
    }

    #[test]
    fn a_signed_token_verifies_and_round_trips() {
        let k = keys();
        let g = grant(&k);
        let t = k.sign(&g);
        assert!(t.starts_with(TOKEN_PREFIX));
        let v = k.verify(&t).unwrap();
        assert_eq!(v.grant, g);
        assert!(v.tools.is_match("crm.read_contact"));
    }

    #[test]
    fn altered_foreign_and_malformed_tokens_are_forged() {
        let k = keys();
        let t = k.sign(&grant(&k));
        // Re-encode the payload with a wider scope, keeping the signature.
        let (_, rest) = t.split_at(TOKEN_PREFIX.len());
        let (p, s) = rest.split_once('.').unwrap();
        let mut g: Grant = serde_json::from_slice(&B64.decode(p).unwrap()).unwrap();
        g.tools = vec!["*".into()];
        let widened = format!(
            "{TOKEN_PREFIX}{}.{s}",
            B64.encode(canonical_payload(&g).unwrap().as_bytes())
        );
        assert!(k.verify(&widened).unwrap_err().0.contains("signature"));

        let other = TokenKeys::new(
            "test/log".into(),
            SigningKey::from_bytes(&[9; 32]),
            Vec::new(),
        );
        assert!(other.verify(&t).unwrap_err().0.contains("not trusted"));
        let elsewhere = TokenKeys::new(
            "other/log".into(),
            SigningKey::from_bytes(&[7; 32]),
            Vec::new(),
        );
        assert!(elsewhere.verify(&t).unwrap_err().0.contains("log"));
        for bad in ["", "arbiter-dt1.", "arbiter-dt1.e30.AAAA", "xyz.abc.def"] {
            assert!(k.verify(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn retired_keys_still_verify_their_tokens() {
        let old = keys();
        let t = old.sign(&grant(&old));
        let new = TokenKeys::new(
            "test/log".into(),
            SigningKey::from_bytes(&[9; 32]),
            vec![SigningKey::from_bytes(&[7; 32]).verifying_key()],
        );
        assert!(new.verify(&t).is_ok());
    }
}
