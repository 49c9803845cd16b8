"""The official google-cloud-datastore client over TLS with a bearer token: what an
application does against a Datastore with client TLS and tokens. Shared by the e2e
security scenario and the node's security tests (node/tests/security/support.py).

With DATASTORE_EMULATOR_HOST set the client opens an insecure channel and sends no
credentials (google/cloud/datastore/_gapic.py), so here it gets the channel an https
endpoint would get (google.auth's secure_authorized_channel: the bearer token from the
credentials on every call) with the given CA as the trusted root.
"""

from __future__ import annotations

import os
from typing import Any

import grpc


def official_tls_client(
    addr: str, ca_pem: bytes, project: str, token: str | None, server_name: str | None = None
) -> Any:
    """A datastore.Client for `addr` over TLS trusting `ca_pem`, sending `token` (None:
    anonymous). `server_name`: check the certificate against this name instead of `addr`
    (a pod dialled by IP, its certificate issued for the Service)."""
    import google.auth.transport.grpc
    import google.auth.transport.requests
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import datastore
    from google.cloud.datastore_v1.services.datastore import client as gapic
    from google.cloud.datastore_v1.services.datastore.transports import grpc as gapic_grpc
    from google.oauth2.credentials import Credentials

    credentials: Any = Credentials(token=token) if token else AnonymousCredentials()
    # With DATASTORE_EMULATOR_HOST set (other tests point it at their nodes) the client
    # refuses explicit credentials: construct this one without it.
    emulator_host = os.environ.pop("DATASTORE_EMULATOR_HOST", None)
    try:
        client = datastore.Client(project=project, credentials=credentials, _use_grpc=True)
    finally:
        if emulator_host is not None:
            os.environ["DATASTORE_EMULATOR_HOST"] = emulator_host
    ssl_creds = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    if token:
        channel = google.auth.transport.grpc.secure_authorized_channel(
            credentials,
            google.auth.transport.requests.Request(),
            addr,
            ssl_credentials=ssl_creds,
            options=options,
        )
    else:
        channel = grpc.secure_channel(addr, ssl_creds, options=options)
    client._datastore_api_internal = gapic.DatastoreClient(
        transport=gapic_grpc.DatastoreGrpcTransport(channel=channel)
    )
    return client
