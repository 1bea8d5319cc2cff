//! The HTTPS client the ACME protocol is spoken over: hyper with rustls
//! (the workspace's ring provider), trusting webpki's roots (the public
//! CAs' APIs) plus the one of `--acme-ca-cert` (a local or private CA).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

use super::AcmeError;

/// Bound on each request to the CA, answer included: a CA that stops
/// answering must not hold an order forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Bound on an answer's body: ACME answers are small JSON documents or
/// a PEM chain.
const MAX_BODY: usize = 1024 * 1024;

/// An HTTPS client for the CA (cheap to clone: one pool).
#[derive(Clone)]
pub struct CaClient(Client<HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>);

impl CaClient {
    /// A client trusting the public roots, and `extra_root` (PEM) if given.
    pub fn new(extra_root: Option<&Path>) -> Result<Self, AcmeError> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = extra_root {
            let failed = |cause: String| AcmeError::CaRoot {
                path: path.to_path_buf(),
                cause,
            };
            let certificates = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|error| failed(error.to_string()))?;
            if certificates.is_empty() {
                return Err(failed(String::from("no contiene ningún certificado PEM")));
            }
            for certificate in certificates {
                roots
                    .add(certificate)
                    .map_err(|error| failed(error.to_string()))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| AcmeError::Tls(error.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        Ok(Self(Client::builder(TokioExecutor::new()).build(connector)))
    }
}

impl CaClient {
    /// The body of a GET to `url` (a CA's root, its directory), `None` if
    /// it cannot be had or the answer is not a success.
    pub async fn get(&self, url: &str) -> Option<Vec<u8>> {
        let request = hyper::Request::get(url).body(BodyWrapper::default()).ok()?;
        let mut answer = self.request(request).await.ok()?;
        if !answer.parts.status.is_success() {
            return None;
        }
        Some(answer.body.into_bytes().await.ok()?.to_vec())
    }
}

impl HttpClient for CaClient {
    fn request(
        &self,
        request: hyper::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let answer = self.0.request(request);
        Box::pin(async move {
            let failed =
                |error: Box<dyn std::error::Error + Send + Sync>| instant_acme::Error::Other(error);
            let (parts, body) = tokio::time::timeout(REQUEST_TIMEOUT, async {
                let (parts, body) = answer.await.map_err(|e| failed(Box::new(e)))?.into_parts();
                let body = http_body_util::Limited::new(body, MAX_BODY)
                    .collect()
                    .await
                    .map_err(failed)?
                    .to_bytes();
                Ok::<_, instant_acme::Error>((parts, body))
            })
            .await
            .map_err(|_elapsed| {
                failed(format!("la CA no respondió en {} s", REQUEST_TIMEOUT.as_secs()).into())
            })??;
            Ok(BytesResponse::from(hyper::Response::from_parts(
                parts,
                http_body_util::Full::new(body),
            )))
        })
    }
}
