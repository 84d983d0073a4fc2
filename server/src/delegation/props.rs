//! Property tests for the delegation-token parser (issue 14): arbitrary strings and
//! every mutation of a valid token are refused without a panic; only the unmodified
//! token verifies. `PROPTEST_CASES` sets the count.

use super::token::{Grant, TokenKeys, TOKEN_PREFIX};
use ed25519_dalek::SigningKey;
use proptest::prelude::*;

fn keys() -> TokenKeys {
    TokenKeys::new(
        "props/log".into(),
        SigningKey::from_bytes(&[3; 32]),
        Vec::new(),
    )
}

/// A token over `payload` signed with the test key (what a signer with a bug could emit).
fn forge(payload: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine as _;
    use ed25519_dalek::Signer;
    let mut msg = b"arbiter-delegation-token-v1\n".to_vec();
    msg.extend_from_slice(payload.as_bytes());
    let sig = SigningKey::from_bytes(&[3; 32]).sign(&msg);
    format!(
        "{TOKEN_PREFIX}{}.{}",
        B64.encode(payload),
        B64.encode(sig.to_bytes())
    )
}

fn grant(k: &TokenKeys) -> impl Strategy<Value = Grant> {
    let (origin, kid) = (k.origin().to_owned(), k.active_kid());
    (
        (
            "\\PC{0,12}",
            prop::collection::vec("[a-z-]{1,8}", 0..3),
            "\\PC{0,12}",
        ),
        prop::collection::vec("[a-z_.]{1,8}\\*?", 0..3),
        prop::collection::vec(
            "(GET|\\*) https://api\\.example\\.com/[a-z]{1,5}/\\*\\*",
            0..3,
        ),
        (
            0i64..(1 << 53),
            0i64..(1 << 53),
            0u32..9,
            prop::option::of("[a-z0-9_]{1,8}"),
        ),
    )
        .prop_map(
            move |((id, issuers, sub), tools, apis, (iat_ms, exp_ms, depth, parent))| Grant {
                v: 1,
                id,
                origin: origin.clone(),
                kid: kid.clone(),
                issuers,
                sub,
                tools,
                apis,
                iat_ms,
                exp_ms,
                depth,
                parent,
            },
        )
}

/// A change to a token string.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(usize, char),
    Remove(usize),
    Insert(usize, char),
    Truncate(usize),
    Append(String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let c = prop_oneof![
        prop::sample::select(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/"
                .chars()
                .collect::<Vec<_>>()
        ),
        any::<char>(),
    ];
    prop_oneof![
        (any::<usize>(), c.clone()).prop_map(|(i, c)| Mutation::Replace(i, c)),
        any::<usize>().prop_map(Mutation::Remove),
        (any::<usize>(), c).prop_map(|(i, c)| Mutation::Insert(i, c)),
        any::<usize>().prop_map(Mutation::Truncate),
        "[A-Za-z0-9_=.-]{1,4}".prop_map(Mutation::Append),
    ]
}

fn mutate(token: &str, m: &Mutation) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    let n = chars.len();
    if n == 0 {
        return token.to_owned() + "x";
    }
    match m {
        Mutation::Replace(i, c) => chars[i % n] = *c,
        Mutation::Remove(i) => {
            chars.remove(i % n);
        }
        Mutation::Insert(i, c) => chars.insert(i % (n + 1), *c),
        Mutation::Truncate(i) => chars.truncate(i % n),
        Mutation::Append(s) => chars.extend(s.chars()),
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(crate::domain::props::cases(48))]

    #[test]
    fn a_presented_payload_with_numbers_jcs_cannot_write_is_refused(exp in (1i64 << 53)..i64::MAX) {
        // Signed by the right key, but a number JCS would round: refused, not a panic.
        let k = keys();
        let payload = format!(
            r#"{{"apis":[],"depth":0,"exp_ms":{exp},"iat_ms":0,"id":"x","issuers":[],"kid":"{}","origin":"props/log","parent":null,"sub":"s","tools":["t"],"v":1}}"#,
            k.active_kid()
        );
        prop_assert!(k.verify(&forge(&payload)).is_err());
    }

    #[test]
    fn a_signed_grant_verifies_unchanged(g in grant(&keys())) {
        let k = keys();
        let v = k.verify(&k.sign(&g)).map_err(|f| TestCaseError::fail(f.0))?;
        prop_assert_eq!(v.grant, g);
    }

    #[test]
    fn only_the_unmodified_token_verifies(g in grant(&keys()), ms in prop::collection::vec(mutation(), 1..4)) {
        let k = keys();
        let token = k.sign(&g);
        let mut t = token.clone();
        for m in &ms {
            t = mutate(&t, m);
        }
        if t != token {
            prop_assert!(k.verify(&t).is_err(), "a mutated token verified: {}", t);
        }
    }

    #[test]
    fn arbitrary_strings_never_verify(s in "\\PC{0,120}", tail in "[A-Za-z0-9_.-]{0,200}") {
        let k = keys();
        prop_assert!(k.verify(&s).is_err());
        let prefixed = format!("{TOKEN_PREFIX}{tail}");
        prop_assert!(k.verify(&prefixed).is_err());
    }

    #[test]
    fn a_resigned_payload_from_another_key_never_verifies(g in grant(&keys()), seed in any::<[u8; 32]>()) {
        prop_assume!(seed != [3; 32]);
        let other = TokenKeys::new("props/log".into(), SigningKey::from_bytes(&seed), Vec::new());
        // The grant still names this log's key id, but the signature is another key's.
        prop_assert!(keys().verify(&other.sign(&g)).is_err());
    }
}
