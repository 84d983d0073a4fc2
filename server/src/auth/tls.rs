//! Identities read from a client certificate that the TLS layer has already verified.

use crate::domain::TlsIdentity;
use x509_cert::der::asn1::{Ia5StringRef, PrintableStringRef, Utf8StringRef};
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::{Decode, Tag, Tagged};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::Certificate;

/// id-ce-subjectAltName (RFC 5280 §4.2.1.6).
const SUBJECT_ALT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");
/// id-at-commonName (RFC 4519).
const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");

/// Every identity in a DER certificate, in matching order: URI SANs (SPIFFE IDs),
/// then DNS SANs, then subject Common Names, each group in certificate order.
/// Values that cannot be an identity (a wildcard DNS name, a CN in an unusual string
/// type, control characters) are skipped, so they can never match.
pub fn certificate_identities(der: &[u8]) -> Result<Vec<TlsIdentity>, String> {
    let cert = Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let tbs = &cert.tbs_certificate;
    let mut uris = Vec::new();
    let mut dns = Vec::new();
    for ext in tbs.extensions.iter().flatten() {
        if ext.extn_id != SUBJECT_ALT_NAME {
            continue;
        }
        let san = SubjectAltName::from_der(ext.extn_value.as_bytes())
            .map_err(|e| format!("unreadable subjectAltName: {e}"))?;
        for name in san.0 {
            match name {
                GeneralName::UniformResourceIdentifier(uri) => {
                    uris.extend(TlsIdentity::uri(uri.as_str()).ok())
                }
                GeneralName::DnsName(name) => dns.extend(TlsIdentity::dns(name.as_str()).ok()),
                _ => {}
            }
        }
    }
    let mut cns = Vec::new();
    for rdn in tbs.subject.0.iter() {
        for atv in rdn.0.iter() {
            if atv.oid != COMMON_NAME {
                continue;
            }
            let text = match atv.value.tag() {
                Tag::Utf8String => atv
                    .value
                    .decode_as::<Utf8StringRef<'_>>()
                    .map(|s| s.as_str().to_owned()),
                Tag::PrintableString => atv
                    .value
                    .decode_as::<PrintableStringRef<'_>>()
                    .map(|s| s.as_str().to_owned()),
                Tag::Ia5String => atv
                    .value
                    .decode_as::<Ia5StringRef<'_>>()
                    .map(|s| s.as_str().to_owned()),
                _ => continue,
            };
            if let Ok(text) = text {
                cns.extend(TlsIdentity::common_name(&text).ok());
            }
        }
    }
    uris.append(&mut dns);
    uris.append(&mut cns);
    Ok(uris)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

    fn cert(sans: Vec<SanType>, cn: Option<&str>) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn uri(s: &str) -> SanType {
        SanType::URI(s.try_into().unwrap())
    }

    fn dns(s: &str) -> SanType {
        SanType::DnsName(s.try_into().unwrap())
    }

    fn texts(der: &[u8]) -> Vec<String> {
        certificate_identities(der)
            .unwrap()
            .iter()
            .map(|i| i.to_string())
            .collect()
    }

    #[test]
    fn uri_sans_come_first_then_dns_sans_then_the_common_name() {
        let der = cert(
            vec![
                dns("Agent-1.Example.org"),
                uri("spiffe://example.org/ns/prod/sa/billing"),
                dns("agent-1.internal"),
            ],
            Some("ops-1"),
        );
        assert_eq!(
            texts(&der),
            [
                "spiffe://example.org/ns/prod/sa/billing",
                "dns:agent-1.example.org",
                "dns:agent-1.internal",
                "cn:ops-1",
            ]
        );
    }

    #[test]
    fn a_certificate_with_only_a_common_name_yields_it() {
        assert_eq!(texts(&cert(vec![], Some("Jane Doe"))), ["cn:Jane Doe"]);
    }

    #[test]
    fn wildcards_and_other_san_types_are_never_identities() {
        let der = cert(
            vec![
                dns("*.example.org"),
                SanType::IpAddress("127.0.0.1".parse().unwrap()),
                SanType::Rfc822Name("ops@example.org".try_into().unwrap()),
            ],
            None,
        );
        assert!(texts(&der).is_empty());
    }

    #[test]
    fn garbage_is_an_error_not_an_empty_identity() {
        assert!(certificate_identities(b"not a certificate").is_err());
    }
}
