"""Real X.509 certificates made at test time (cryptography): a CA, a server certificate for 127.0.0.1 and
localhost, client certificates, and an SSLConfig text proto naming them, as TF Serving's tests write one."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class Pem:
    cert: str
    key: str


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str = "tfpredict test CA") -> tuple[Pem, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    return Pem(cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key)), key


def issue(ca: Pem, ca_key: ec.EllipticCurvePrivateKey, common_name: str, server: bool) -> Pem:
    """A leaf certificate signed by the CA: for a server (127.0.0.1, localhost) or a client."""
    key = _key()
    now = datetime.datetime.now(datetime.timezone.utc)
    issuer = x509.load_pem_x509_certificate(ca.cert.encode()).subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if server:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return Pem(cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key))


@dataclass
class Pki:
    """Files in `root`: ca.pem, server.pem/key, client.pem/key (signed by the CA), rogue.pem/key (signed
    by another CA), and the SSLConfig text with and without client_verify."""

    root: Path
    ca: Path
    server: Pem
    client_cert: Path
    client_key: Path
    rogue_cert: Path
    rogue_key: Path
    ca_pem: str

    def ssl_config(self, client_verify: bool, name: str = "") -> Path:
        text = (
            f"server_key: {_quote(self.server.key)}\nserver_cert: {_quote(self.server.cert)}\n"
            f"custom_ca: {_quote(self.ca_pem)}\nclient_verify: {'true' if client_verify else 'false'}\n"
        )
        path = self.root / (name or f"ssl_{'mtls' if client_verify else 'tls'}.pbtxt")
        path.write_text(text)
        return path


def _quote(pem: str) -> str:
    return '"' + pem.replace("\n", "\\n") + '"'


def make_pki(root: Path) -> Pki:
    root.mkdir(parents=True, exist_ok=True)
    ca, ca_key = make_ca()
    server = issue(ca, ca_key, "tfpredict test server", server=True)
    client = issue(ca, ca_key, "tfpredict test client", server=False)
    other, other_key = make_ca("some other CA")
    rogue = issue(other, other_key, "rogue client", server=False)
    files = {
        "ca.pem": ca.cert,
        "client.pem": client.cert,
        "client.key": client.key,
        "rogue.pem": rogue.cert,
        "rogue.key": rogue.key,
    }
    for name, text in files.items():
        (root / name).write_text(text)
    return Pki(
        root,
        root / "ca.pem",
        server,
        root / "client.pem",
        root / "client.key",
        root / "rogue.pem",
        root / "rogue.key",
        ca.cert,
    )
