//! The real certificate source: `istio.v1.auth.IstioCertificateService/CreateCertificate` on
//! the controller, over TLS, authenticated by the node's bearer token.
//!
//! Each request carries a fresh ECDSA P-256 key's CSR whose only URI SAN is the identity, and
//! names the identity again in the `ImpersonatedIdentity` metadata, as Istio's ztunnel does.
//! The key never leaves this process.

use std::collections::BTreeMap;
use std::time::Duration;

use mesh_proto::istio::v1::auth::IstioCertificateRequest;
use mesh_proto::istio::v1::auth::istio_certificate_service_client::IstioCertificateServiceClient;
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::source::{CertificateSource, FetchError};
use crate::identity::SpiffeId;
use crate::tls::WorkloadCertificate;

/// The name the controller's serving certificate is checked against, by default; the
/// controller puts it in its certificate (`controller::app::DEFAULT_SERVING_NAMES`).
pub const DEFAULT_CA_DOMAIN_NAME: &str = "controller";

/// The validity asked of the CA, by default (DESIGN.md: 24 h). The CA may grant less.
pub const DEFAULT_CERTIFICATE_VALIDITY: Duration = Duration::from_secs(24 * 60 * 60);

/// How long establishing the connection to the controller may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The request metadata field in which a node proxy names the identity it asks for.
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";

/// Where and how to reach the controller's CA.
#[derive(Clone)]
pub struct ControllerCaConfig {
    /// The controller's gRPC address, e.g. `https://10.0.0.1:15012`.
    pub address: String,
    /// The name the controller's serving certificate must carry.
    pub domain_name: String,
    /// The PEM roots that the controller's serving certificate chains to (the mesh roots).
    pub roots_pem: String,
    /// This node's bearer token, as issued by the controller.
    pub token: String,
    /// The validity asked for each certificate.
    pub validity: Duration,
}

impl ControllerCaConfig {
    /// A configuration with the default domain name and validity.
    pub fn new(
        address: impl Into<String>,
        roots_pem: impl Into<String>,
        token: impl Into<String>,
    ) -> Self {
        Self {
            address: address.into(),
            domain_name: DEFAULT_CA_DOMAIN_NAME.to_string(),
            roots_pem: roots_pem.into(),
            token: token.into(),
            validity: DEFAULT_CERTIFICATE_VALIDITY,
        }
    }
}

impl std::fmt::Debug for ControllerCaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a credential: never print it.
        f.debug_struct("ControllerCaConfig")
            .field("address", &self.address)
            .field("domain_name", &self.domain_name)
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

/// Why a [`ControllerCa`] cannot be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ControllerCaError {
    /// The address is not a URI tonic can dial.
    #[error("the controller address {address:?} is not a valid https:// URI: {source}")]
    InvalidAddress {
        /// The address as configured.
        address: String,
        /// The parser's complaint.
        source: tonic::transport::Error,
    },
    /// The address does not use TLS; the CA is only spoken to over TLS.
    #[error("the controller address {address:?} must start with https://")]
    NotHttps {
        /// The address as configured.
        address: String,
    },
    /// The TLS settings (roots, domain name) were refused.
    #[error(
        "cannot configure TLS to the controller (roots or domain name {domain_name:?}): {source}"
    )]
    Tls {
        /// The configured domain name.
        domain_name: String,
        /// tonic's complaint.
        source: tonic::transport::Error,
    },
    /// The token cannot be sent as gRPC metadata.
    #[error(
        "the bearer token contains characters that cannot be sent in a gRPC header; check the token file"
    )]
    InvalidToken,
    /// The requested validity is zero or too long to express in seconds.
    #[error("the requested certificate validity {0:?} must be at least one second")]
    InvalidValidity(Duration),
}

/// The controller's CA as a [`CertificateSource`]. Cheap to clone.
#[derive(Clone)]
pub struct ControllerCa {
    client: IstioCertificateServiceClient<Channel>,
    authorization: AsciiMetadataValue,
    validity_seconds: i64,
}

impl ControllerCa {
    /// Builds a client that connects on first use and reconnects as needed.
    ///
    /// Must be called inside a tokio runtime.
    pub fn new(config: &ControllerCaConfig) -> Result<Self, ControllerCaError> {
        if !config.address.starts_with("https://") {
            return Err(ControllerCaError::NotHttps {
                address: config.address.clone(),
            });
        }
        // Check the credentials before anything that needs the network stack.
        credentials(&config.token, config.validity)?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&config.roots_pem))
            .domain_name(config.domain_name.clone());
        let endpoint = Endpoint::from_shared(config.address.clone())
            .map_err(|source| ControllerCaError::InvalidAddress {
                address: config.address.clone(),
                source,
            })?
            .tls_config(tls)
            .map_err(|source| ControllerCaError::Tls {
                domain_name: config.domain_name.clone(),
                source,
            })?
            .connect_timeout(CONNECT_TIMEOUT);
        Self::with_channel(endpoint.connect_lazy(), &config.token, config.validity)
    }

    /// Builds a client on an existing channel, e.g. the one the xDS client uses.
    pub fn with_channel(
        channel: Channel,
        token: &str,
        validity: Duration,
    ) -> Result<Self, ControllerCaError> {
        let (authorization, validity_seconds) = credentials(token, validity)?;
        Ok(Self {
            client: IstioCertificateServiceClient::new(channel),
            authorization,
            validity_seconds,
        })
    }
}

impl CertificateSource for ControllerCa {
    async fn fetch(&self, identity: &SpiffeId) -> Result<WorkloadCertificate, FetchError> {
        let (body, key_pem) = certificate_request(identity, self.validity_seconds)?;
        let mut request = tonic::Request::new(body);
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        let response = self
            .client
            .clone()
            .create_certificate(request)
            .await
            .map_err(|status| FetchError::from_status(&status))?
            .into_inner();
        if response.cert_chain.is_empty() {
            return Err(FetchError::EmptyChain);
        }
        // Leaf first, then intermediates and the root, as the CA sends them.
        let chain_pem = response.cert_chain.join("\n");
        WorkloadCertificate::from_pem(identity, chain_pem.as_bytes(), key_pem.as_bytes())
            .map_err(FetchError::InvalidCertificate)
    }
}

/// The `authorization` header value and the requested validity in seconds.
fn credentials(
    token: &str,
    validity: Duration,
) -> Result<(AsciiMetadataValue, i64), ControllerCaError> {
    let authorization = MetadataValue::try_from(format!("Bearer {token}"))
        .map_err(|_| ControllerCaError::InvalidToken)?;
    let validity_seconds = i64::try_from(validity.as_secs())
        .ok()
        .filter(|s| *s > 0)
        .ok_or(ControllerCaError::InvalidValidity(validity))?;
    Ok((authorization, validity_seconds))
}

/// A request for `identity` and the PEM of its new private key.
pub(crate) fn certificate_request(
    identity: &SpiffeId,
    validity_seconds: i64,
) -> Result<(IstioCertificateRequest, String), FetchError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(FetchError::Csr)?;
    let uri = identity.to_string().try_into().map_err(FetchError::Csr)?;
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(uri)];
    let csr = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(FetchError::Csr)?;
    let metadata = prost_types::Struct {
        fields: BTreeMap::from([(
            IMPERSONATED_IDENTITY.to_string(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue(identity.to_string())),
            },
        )]),
    };
    let request = IstioCertificateRequest {
        csr,
        validity_duration: validity_seconds,
        metadata: Some(metadata),
    };
    Ok((request, key.serialize_pem()))
}
