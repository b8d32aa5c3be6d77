"""TLS for the DICOM node (``PNEUMOSCAN_DICOM_TLS_*``): the listener's context, with mutual TLS
when a CA is given, and the sender's, which checks the destination's certificate and host name.

TLS 1.2 or later, as the BCP 195 profiles that DICOM's secure transport connection profiles (PS3.15
Annex B) point to ask for; ciphers are Python's defaults.
"""

from __future__ import annotations

import ssl

from pneumoscan.errors import ConfigurationError
from pneumoscan.settings import Settings


def _load(context: ssl.SSLContext, settings: Settings) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if settings.dicom_tls_cert is not None:
            context.load_cert_chain(settings.dicom_tls_cert, settings.dicom_tls_key)
        if settings.dicom_tls_ca is not None:
            context.load_verify_locations(cafile=settings.dicom_tls_ca)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"Cannot load the DICOM node's TLS certificate, key or CA: {exc}") from exc
    return context


def server_tls(settings: Settings) -> ssl.SSLContext | None:
    """The listener's TLS context, or None for plain DICOM; with ``dicom_tls_ca``, a caller must
    present a certificate that CA signed."""
    if (settings.dicom_tls_cert is None) != (settings.dicom_tls_key is None):
        raise ConfigurationError("PNEUMOSCAN_DICOM_TLS_CERT and PNEUMOSCAN_DICOM_TLS_KEY must be set together.")
    if settings.dicom_tls_cert is None:
        if settings.dicom_tls_ca is not None and not settings.dicom_destination_tls:
            raise ConfigurationError(
                "PNEUMOSCAN_DICOM_TLS_CA is set but nothing uses TLS: set PNEUMOSCAN_DICOM_TLS_CERT and _KEY, "
                "or PNEUMOSCAN_DICOM_DESTINATION_TLS=true."
            )
        return None
    context = _load(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), settings)
    if settings.dicom_tls_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_tls(settings: Settings) -> ssl.SSLContext | None:
    """The sender's TLS context when ``dicom_destination_tls`` is set: the destination's
    certificate and host name are checked against ``dicom_tls_ca``, or the system's CAs without
    it; the node's own certificate is presented when it has one."""
    if not settings.dicom_destination_tls:
        return None
    if settings.dicom_tls_ca is None:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # checks certificate and host name; this CA only
    return _load(context, settings)
