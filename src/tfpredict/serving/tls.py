"""TLS on both ports from TF Serving's --ssl_config_file (an SSLConfig text proto with the PEMs inline).

TF Serving applies the file to gRPC only; tfpredict also applies it to REST (TF Serving's open request
#1503). `client_verify: true` requires and verifies a client certificate signed by `custom_ca` (mutual TLS)
on both ports, as TF Serving's REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY does for gRPC.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

from ..errors import UsageError

H2 = "h2"  # ALPN of the gRPC port: grpcio clients require it
HTTP11 = "http/1.1"


@dataclass(frozen=True)
class TlsConfig:
    """The fields of SSLConfig: PEM text (not file names), and whether clients must show a certificate."""

    server_key: str
    server_cert: str
    custom_ca: str = ""
    client_verify: bool = False
    source: str = "<ssl config>"


def _ssl_config_class() -> Any:
    """tensorflow_serving.config.ssl_config_pb2.SSLConfig, or the same message declared here (the pip
    package tensorflow-serving-api does not ship ssl_config.proto)."""
    try:
        from tensorflow_serving.config import ssl_config_pb2  # type: ignore[attr-defined]

        return ssl_config_pb2.SSLConfig
    except ImportError:
        pass
    pool = descriptor_pool.Default()
    name = "tfpredict/serving/ssl_config.proto"
    try:
        pool.FindFileByName(name)
    except KeyError:
        f = descriptor_pb2.FileDescriptorProto(name=name, package="tensorflow.serving", syntax="proto3")
        m = f.message_type.add(name="SSLConfig")
        T = descriptor_pb2.FieldDescriptorProto
        for fname, number, ftype in (
            ("server_key", 1, T.TYPE_STRING),
            ("server_cert", 2, T.TYPE_STRING),
            ("custom_ca", 3, T.TYPE_STRING),
            ("client_verify", 4, T.TYPE_BOOL),
        ):
            m.field.add(name=fname, number=number, type=ftype, label=T.LABEL_OPTIONAL)
        pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.SSLConfig"))


def parse_ssl_config(text: str, path: str = "<ssl config>") -> TlsConfig:
    """An SSLConfig text proto as a TlsConfig, checked for what a server needs."""
    proto = _ssl_config_class()()
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as exc:
        raise UsageError(f"Error parsing text-format tensorflow.serving.SSLConfig in {path}: {exc}") from exc
    if not proto.server_key or not proto.server_cert:
        raise UsageError(f"{path}: an SSLConfig needs server_key and server_cert (PEM text)")
    if proto.client_verify and not proto.custom_ca:
        raise UsageError(f"{path}: client_verify needs custom_ca (the PEM of the CA that signs clients)")
    config = TlsConfig(proto.server_key, proto.server_cert, proto.custom_ca, proto.client_verify, path)
    server_context(config, [HTTP11])  # a key that does not match its certificate fails here, at start-up
    return config


def read_ssl_config(path: str) -> TlsConfig | None:
    """--ssl_config_file's TlsConfig, or None without the flag."""
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise UsageError(f"Could not open SSL config file {path}: {exc.strerror}") from exc
    return parse_ssl_config(text, path)


def server_context(config: TlsConfig, alpn: list[str]) -> ssl.SSLContext:
    """An ssl.SSLContext for asyncio's create_server(ssl=...): TLS 1.2+, the given ALPN protocols."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(alpn)
    # ssl loads a certificate chain from files only: a private directory, removed once it is loaded.
    with tempfile.TemporaryDirectory(prefix="tfpredict-tls-") as tmp:
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        for file, text in ((cert, config.server_cert), (key, config.server_key)):
            with open(os.open(file, os.O_WRONLY | os.O_CREAT, 0o600), "w", encoding="utf-8") as f:
                f.write(text)
        try:
            context.load_cert_chain(cert, key)
        except ssl.SSLError as exc:
            raise UsageError(
                f"{config.source}: server_cert / server_key are not a PEM certificate and its key "
                f"({exc.reason or exc})"
            ) from exc
    if config.client_verify:
        try:
            context.load_verify_locations(cadata=config.custom_ca)
        except (ssl.SSLError, ValueError) as exc:
            raise UsageError(f"{config.source}: custom_ca is not a PEM certificate ({exc})") from exc
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def grpc_server_credentials(config: TlsConfig) -> Any:
    """grpcio's server credentials for --grpc_frontend=grpcio, from the same config."""
    import grpc

    return grpc.ssl_server_credentials(
        [(config.server_key.encode(), config.server_cert.encode())],
        root_certificates=config.custom_ca.encode() if config.custom_ca else None,
        require_client_auth=config.client_verify,
    )
