"""TLS material for the API server: a CA, a serving certificate, an admin client certificate, a bearer token.

Everything lives in one directory (mode 0700) and is made once; later starts reuse it, so kubeconfigs stay
valid across restarts of the server. The admin client certificate carries O=system:masters, as kubeadm's
admin.conf does; the server accepts any certificate its CA signed, or the token.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=365)


@dataclass(frozen=True)
class CertDir:
    path: Path

    @property
    def ca(self) -> Path:
        return self.path / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.path / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.path / "apiserver.crt"

    @property
    def server_key(self) -> Path:
        return self.path / "apiserver.key"

    @property
    def admin_cert(self) -> Path:
        return self.path / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.path / "admin.key"

    @property
    def token_file(self) -> Path:
        return self.path / "token"

    def token(self) -> str:
        return self.token_file.read_text().strip()


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _builder(subject: x509.Name, issuer: x509.Name, public_key: object) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY))


def ensure(path: str | Path, hosts: list[str]) -> CertDir:
    """Make (or reuse) the CA, a serving certificate valid for hosts (IPs or names), the admin client
    certificate and the token. A serving certificate that lacks one of hosts is made again."""
    d = CertDir(Path(path))
    d.path.mkdir(parents=True, exist_ok=True)
    os.chmod(d.path, 0o700)
    if not (d.ca.exists() and d.ca_key.exists()):
        key = _key()
        name = _name("podnet-ca")
        cert = (_builder(name, name, key.public_key())
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        _write_key(d.ca_key, key)
        _write_cert(d.ca, cert)
        for stale in (d.server_cert, d.admin_cert):
            stale.unlink(missing_ok=True)
    ca_cert = x509.load_pem_x509_certificate(d.ca.read_bytes())
    ca_key = serialization.load_pem_private_key(d.ca_key.read_bytes(), None)
    wanted = sorted(set(hosts) | {"127.0.0.1", "localhost"})
    if not d.server_cert.exists() or _sans(d.server_cert) != set(wanted):
        key = _key()
        sans: list[x509.GeneralName] = []
        for h in wanted:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                sans.append(x509.DNSName(h))
        cert = (_builder(_name("podnet-apiserver"), ca_cert.subject, key.public_key())
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
        _write_key(d.server_key, key)
        _write_cert(d.server_cert, cert)
    if not d.admin_cert.exists():
        key = _key()
        cert = (_builder(_name("podnet-admin", "system:masters"), ca_cert.subject, key.public_key())
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
        _write_key(d.admin_key, key)
        _write_cert(d.admin_cert, cert)
    if not d.token_file.exists():
        fd = os.open(d.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    return d


def _sans(cert_path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(v) for v in ext.get_values_for_type(x509.IPAddress)} | set(ext.get_values_for_type(x509.DNSName))


def kubeconfig(d: CertDir, server: str, *, cluster: str = "podnet", token: bool = False) -> str:
    """A kubeconfig for server with the CA and the admin certificate (or the token) embedded."""
    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    user: dict[str, str] = ({"token": d.token()} if token else
                            {"client-certificate-data": b64(d.admin_cert), "client-key-data": b64(d.admin_key)})
    doc = {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": cluster, "cluster": {"server": server, "certificate-authority-data": b64(d.ca)}}],
        "users": [{"name": f"{cluster}-admin", "user": user}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": f"{cluster}-admin"}}],
        "current-context": cluster,
    }
    return yaml.safe_dump(doc, sort_keys=False)
