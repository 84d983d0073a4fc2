"""A throw-away certificate authority for the TLS tests, made with `cryptography` at run
time: no private key is checked in."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _builder(subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def _write(
    directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> tuple[Path, Path]:
    crt, pem = directory / f"{name}.crt", directory / f"{name}.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return crt, pem


class Ca:
    """A self-signed CA that writes its certificate and signs leaf certificates."""

    def __init__(self, directory: Path, name: str = "test-ca") -> None:
        self.directory = directory
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = _name(name)
        cert = (
            _builder(name, self._name, self._key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.cert, _ = _write(directory, "ca", cert, self._key)

    def leaf(
        self, name: str, sans: list[x509.GeneralName], usage: x509.ObjectIdentifier
    ) -> tuple[Path, Path]:
        """`name.crt` and `name.key`, signed by this CA for `usage` (server or client auth)."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            _builder(name, self._name, key)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return _write(self.directory, name, cert, key)

    def server(self, dns: str) -> tuple[Path, Path]:
        return self.leaf("server", [x509.DNSName(dns)], ExtendedKeyUsageOID.SERVER_AUTH)

    def client(self, name: str) -> tuple[Path, Path]:
        return self.leaf(
            name, [x509.UniformResourceIdentifier(f"spiffe://test/{name}")], ExtendedKeyUsageOID.CLIENT_AUTH
        )
