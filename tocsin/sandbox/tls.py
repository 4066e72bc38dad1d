"""A certificate authority made at run time, so that the sandbox's fakes can serve https.

Some clients accept only https (msal refuses an http authority), and a fake served over
TLS exercises the clients' certificate checks as production does. ``LoopbackCA`` makes a
CA and a server certificate for ``127.0.0.1`` and ``localhost`` (ECDSA P-256, valid for a
day) with ``cryptography``, in a private folder; fakes serve with ``server_context()``
and each integration's client trusts ``ca_bundle`` through its own ``ca_bundle`` setting.
Nothing is added to the system's trust store.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tocsin.private_paths import private_file, private_folder

VALID_FOR = timedelta(days=1)


@dataclass(frozen=True)
class LoopbackCA:
    """The PEM files of a loopback CA and of the server certificate it signed."""

    ca_bundle: Path
    """The CA certificate: what clients trust."""
    certificate: Path
    """The server's certificate chain (``127.0.0.1``, ``localhost``)."""
    private_key: Path

    @classmethod
    def create(cls, folder: Path) -> LoopbackCA:
        """Make the CA and the server certificate in ``folder`` (created 0700)."""
        private_folder(folder)
        now = datetime.now(UTC)
        ca_key, ca_cert = self_signed_ca("Tocsin sandbox CA", VALID_FOR)
        server_key = ec.generate_private_key(ec.SECP256R1())
        server_cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_cert.subject)
            .public_key(server_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + VALID_FOR)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.DNSName("localhost"),
                    ]
                ),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        found = cls(folder / "ca.pem", folder / "server.pem", folder / "server-key.pem")
        found.ca_bundle.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        found.certificate.write_bytes(
            server_cert.public_bytes(serialization.Encoding.PEM)
            + ca_cert.public_bytes(serialization.Encoding.PEM)
        )
        private_file(found.private_key)
        found.private_key.write_bytes(
            server_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return found

    def server_context(self) -> ssl.SSLContext:
        """What a fake serves https with."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.certificate, self.private_key)
        return context


def self_signed_ca(
    name: str, valid_for: timedelta
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A CA key and its self-signed certificate (P-256), allowed to sign certificates and
    CRLs, valid from five minutes ago for ``valid_for``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + valid_for)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, certificate
