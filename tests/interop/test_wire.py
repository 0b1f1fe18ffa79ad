"""The controller's wire contract, checked with an independent gRPC client.

Python's grpcio, with stubs generated from the project's schemas by grpc_tools (at test time,
into a temporary directory), talks to a real controller process over TLS: the CA signs a CSR
made by the `cryptography` package, delta ADS serves and tracks an ACK. If these pass, the
wire is standard gRPC and protobuf, not something only our own Rust client understands.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf import struct_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("MESH_BIN_DIR", ROOT / "target" / "debug"))
ADDRESS_TYPE = "type.googleapis.com/istio.workload.Address"
SCHEMAS = [
    "envoy/service/discovery/v3/discovery.proto",
    "envoy/config/core/v3/base.proto",
    "google/rpc/status.proto",
    "istio/workload/workload.proto",
    "istio/v1/auth/ca.proto",
]

MANIFESTS = """
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels:
    istio.io/dataplane-mode: ambient
---
apiVersion: v1
kind: Pod
metadata:
  name: cart
  namespace: shop
  labels: {app: cart}
spec:
  nodeName: node-1
  serviceAccountName: cart
  containers: [{name: app, image: cart}]
status:
  podIP: 10.1.0.5
---
apiVersion: v1
kind: Service
metadata:
  name: cart
  namespace: shop
spec:
  selector: {app: cart}
  ports: [{name: http, port: 80, targetPort: 8080}]
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def stubs():
    out = tempfile.mkdtemp(prefix="mesh-stubs-")
    proto_dir = str(ROOT / "proto" / "proto")
    include = str(Path(protoc.__file__).parent / "_proto")
    args = ["protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}"]
    assert protoc.main(args + SCHEMAS) == 0, "grpc_tools could not compile the schemas"
    sys.path.insert(0, out)
    import envoy.service.discovery.v3.discovery_pb2 as ads
    import envoy.service.discovery.v3.discovery_pb2_grpc as ads_grpc
    import istio.v1.auth.ca_pb2 as ca
    import istio.v1.auth.ca_pb2_grpc as ca_grpc
    import istio.workload.workload_pb2 as workload

    return {"ads": ads, "ads_grpc": ads_grpc, "ca": ca, "ca_grpc": ca_grpc, "workload": workload}


@pytest.fixture(scope="module")
def controller():
    work = Path(tempfile.mkdtemp(prefix="mesh-interop-"))
    manifests, state = work / "manifests", work / "state"
    manifests.mkdir()
    (manifests / "shop.yaml").write_text(MANIFESTS)
    tokens = {}
    for node in ("node-1", "node-2"):
        out = work / f"{node}.token"
        subprocess.run(
            [BIN / "controller", "token", "issue", "--state", state, "--node", node, "--out", out],
            check=True,
        )
        tokens[node] = out.read_text().strip()
    grpc_port, status_port = free_port(), free_port()
    log = open(work / "controller.log", "w")
    proc = subprocess.Popen(
        [
            BIN / "controller", "serve",
            "--manifests", manifests, "--state", state,
            "--grpc-addr", f"127.0.0.1:{grpc_port}",
            "--status-addr", f"127.0.0.1:{status_port}",
        ],
        stdout=log, stderr=subprocess.STDOUT,
    )
    status_url = f"http://127.0.0.1:{status_port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{status_url}/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (work / "controller.log").read_text()
            assert time.monotonic() < deadline, "controller not ready in 30 s"
            time.sleep(0.1)
        roots = (state / "root-cert.pem").read_bytes()
        yield {"grpc": f"127.0.0.1:{grpc_port}", "status": status_url, "roots": roots, "tokens": tokens}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def channel(controller):
    creds = grpc.ssl_channel_credentials(root_certificates=controller["roots"])
    return grpc.secure_channel(
        controller["grpc"], creds, options=[("grpc.ssl_target_name_override", "controller")]
    )


def csr_for(identity):
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cluster.local")]))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def certificate_request(stubs, identity, validity=3600):
    metadata = struct_pb2.Struct()
    metadata.update({"ImpersonatedIdentity": identity})
    return stubs["ca"].IstioCertificateRequest(csr=csr_for(identity), validity_duration=validity, metadata=metadata)


CART = "spiffe://cluster.local/ns/shop/sa/cart"


def test_ca_signs_a_workload_on_the_callers_node(stubs, controller):
    ca = stubs["ca_grpc"].IstioCertificateServiceStub(channel(controller))
    auth = [("authorization", f"Bearer {controller['tokens']['node-1']}")]
    response = ca.CreateCertificate(certificate_request(stubs, CART), metadata=auth, timeout=10)
    assert len(response.cert_chain) >= 2, "leaf first, then the root"
    leaf = x509.load_pem_x509_certificate(response.cert_chain[0].encode())
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [CART]
    root = x509.load_pem_x509_certificate(response.cert_chain[-1].encode())
    leaf.verify_directly_issued_by(
        x509.load_pem_x509_certificate(response.cert_chain[1].encode())
    )
    assert root.subject == root.issuer


def test_ca_refuses_a_workload_on_another_node(stubs, controller):
    ca = stubs["ca_grpc"].IstioCertificateServiceStub(channel(controller))
    auth = [("authorization", f"Bearer {controller['tokens']['node-2']}")]
    with pytest.raises(grpc.RpcError) as refused:
        ca.CreateCertificate(certificate_request(stubs, CART), metadata=auth, timeout=10)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "node-2" in refused.value.details()


def test_ca_refuses_an_unknown_token(stubs, controller):
    ca = stubs["ca_grpc"].IstioCertificateServiceStub(channel(controller))
    with pytest.raises(grpc.RpcError) as refused:
        ca.CreateCertificate(
            certificate_request(stubs, CART), metadata=[("authorization", "Bearer forged")], timeout=10
        )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_delta_ads_serves_addresses_and_records_the_ack(stubs, controller):
    ads, ads_grpc, workload = stubs["ads"], stubs["ads_grpc"], stubs["workload"]
    stub = ads_grpc.AggregatedDiscoveryServiceStub(channel(controller))
    auth = [("authorization", f"Bearer {controller['tokens']['node-1']}")]
    outbox = []
    first = ads.DeltaDiscoveryRequest(type_url=ADDRESS_TYPE)
    first.node.id = "ztunnel~10.0.0.1~interop.test~test.svc.cluster.local"
    outbox.append(first)

    def requests():
        while True:
            while outbox:
                yield outbox.pop(0)
            time.sleep(0.05)

    responses = stub.DeltaAggregatedResources(requests(), metadata=auth, timeout=20)
    response = next(responses)
    assert response.type_url == ADDRESS_TYPE
    assert response.nonce
    workloads, services = {}, {}
    for resource in response.resources:
        address = workload.Address()
        assert resource.resource.Unpack(address), resource.resource.type_url
        if address.HasField("workload"):
            workloads[address.workload.name] = address.workload
        else:
            services[address.service.hostname] = address.service
    cart = workloads["cart"]
    assert cart.namespace == "shop"
    assert cart.service_account == "cart"
    assert cart.node == "node-1"
    assert cart.tunnel_protocol == workload.TunnelProtocol.Value("HBONE")
    assert bytes(cart.addresses[0]) == socket.inet_aton("10.1.0.5")
    service = services["cart.shop.svc.cluster.local"]
    assert [(p.service_port, p.target_port) for p in service.ports] == [(80, 8080)]

    outbox.append(ads.DeltaDiscoveryRequest(type_url=ADDRESS_TYPE, response_nonce=response.nonce))
    deadline = time.monotonic() + 10
    while True:
        with urllib.request.urlopen(f"{controller['status']}/status", timeout=2) as r:
            status = json.load(r)
        proxies = [p for p in status["proxies"] if p["proxy_id"] == first.node.id]
        acked = proxies and proxies[0]["types"].get(ADDRESS_TYPE, {}).get("acked_version")
        if acked is not None:
            assert str(acked) == response.system_version_info
            break
        assert time.monotonic() < deadline, f"no ACK recorded in the status API: {status}"
        time.sleep(0.1)
    responses.cancel()
