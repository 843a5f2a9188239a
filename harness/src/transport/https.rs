//! HTTPS to the device: the CA is fetched from `/noreya-nexus/certificates/ca.pem` and pinned on
//! first use (the vendor's advice); every later connection must chain to the pinned CA, and a
//! changed CA is an error that says how to re-pin.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use nexus_contract::paths::CA_PATH;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::Error;

/// One response: status, headers (lower-case names), and where the body went.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
    pub body_sha256: String,
    /// The body itself when it was small and not saved to a file.
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// How a body is received.
#[derive(Debug, Clone, Copy, Default)]
pub struct Receive {
    /// Append to the `save` file instead of replacing it (a resumed download).
    pub append: bool,
    /// Give up when no data arrives for this long (so a resumable client can reconnect).
    pub stall: Option<Duration>,
}

/// A device's HTTPS endpoint and the file its CA is pinned in.
#[derive(Debug, Clone)]
pub struct HttpsTarget {
    pub host: String,
    pub port: u16,
    pub pin: PathBuf,
    /// HTTP Basic auth password for user `token`, when the device wants one.
    pub token: Option<String>,
    /// The CA's SHA-256 fingerprint from the inventory: the CA fetched on first use (or pinned
    /// earlier) must have it, instead of being trusted blindly.
    pub ca_sha256: Option<String>,
}

/// The SHA-256 fingerprint of the first certificate in `pem`, as `openssl x509 -fingerprint
/// -sha256` shows it (upper-case hex pairs joined by `:`).
pub fn fingerprint(pem: &[u8]) -> Option<String> {
    let der = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
    let digest = Sha256::digest(der.as_ref());
    Some(digest.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":"))
}

/// The SHA-256 of a DER certificate's SubjectPublicKeyInfo, base64.
pub fn spki_sha256(der: &[u8]) -> Result<String, Error> {
    use base64::Engine;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| Error::Connect(format!("the server's certificate is unreadable: {e}")))?;
    let digest = Sha256::digest(cert.tbs_certificate.subject_pki.raw);
    Ok(base64::engine::general_purpose::STANDARD.encode(digest))
}

/// Whether two fingerprints are the same, whatever their case and separators.
pub fn same_fingerprint(a: &str, b: &str) -> bool {
    let norm = |s: &str| -> String {
        s.chars()
            .filter(char::is_ascii_hexdigit)
            .collect::<String>()
            .to_ascii_lowercase()
    };
    norm(a) == norm(b)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts any certificate: used once, to fetch the CA that is then pinned.
#[derive(Debug)]
struct TrustOnFirstUse(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for TrustOnFirstUse {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl HttpsTarget {
    fn config(&self, pinned: Option<&[u8]>) -> Result<rustls::ClientConfig, Error> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Connect(e.to_string()))?;
        Ok(match pinned {
            Some(pem) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem) {
                    roots
                        .add(cert.map_err(|e| {
                            Error::Pin(format!("the pinned CA {} is unreadable: {e}", self.pin.display()))
                        })?)
                        .map_err(|e| Error::Pin(e.to_string()))?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(TrustOnFirstUse(provider())))
                .with_no_client_auth(),
        })
    }

    /// The server's own key, checked: a TLS handshake verified against the pinned CA, then the
    /// SHA-256 of the leaf certificate's SubjectPublicKeyInfo, base64 (the form Chromium's
    /// `--ignore-certificate-errors-spki-list` takes).
    pub async fn server_spki_sha256(&self, timeout: Duration) -> Result<String, Error> {
        let pem = self.pin_ca(timeout).await?;
        let config = self.config(Some(&pem))?;
        let handshake = async {
            let tls = self.connect(config).await.map_err(|e| self.explain(e))?;
            let leaf = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .ok_or_else(|| Error::Connect(format!("{}:{} sent no certificate", self.host, self.port)))?;
            spki_sha256(leaf.as_ref())
        };
        tokio::time::timeout(timeout, handshake).await.map_err(|_| {
            Error::TimedOut(format!(
                "TLS with {}:{}: no handshake within {timeout:?}",
                self.host, self.port
            ))
        })?
    }

    /// Pins the device's CA if nothing is pinned yet; returns the pinned PEM.
    pub async fn pin_ca(&self, timeout: Duration) -> Result<Vec<u8>, Error> {
        let pem = self.fetch_or_read_pin(timeout).await?;
        if let Some(want) = &self.ca_sha256 {
            let seen = fingerprint(&pem).unwrap_or_else(|| "unreadable".into());
            if !same_fingerprint(&seen, want) {
                return Err(Error::Pin(format!(
                    "the device's CA has SHA-256 fingerprint {seen}, but the inventory pins {want} (pinned copy: {}); if the device was reset on purpose, put the new fingerprint in the inventory and delete that file",
                    self.pin.display()
                )));
            }
        }
        Ok(pem)
    }

    async fn fetch_or_read_pin(&self, timeout: Duration) -> Result<Vec<u8>, Error> {
        if let Ok(pem) = std::fs::read(&self.pin) {
            return Ok(pem);
        }
        let config = self.config(None)?;
        let r = self
            .request(config, "GET", CA_PATH, &[], None, Receive::default(), timeout)
            .await?;
        if r.status != 200 || !r.body.starts_with(b"-----BEGIN CERTIFICATE-----") {
            return Err(Error::Pin(format!(
                "the device did not serve its CA at {CA_PATH} (status {})",
                r.status
            )));
        }
        if let Some(want) = &self.ca_sha256 {
            // Checked before anything is pinned, so a wrong CA never lands in the pin file.
            if !fingerprint(&r.body).is_some_and(|seen| same_fingerprint(&seen, want)) {
                return Err(Error::Pin(format!(
                    "the device's CA has SHA-256 fingerprint {}, but the inventory pins {want}; nothing was pinned",
                    fingerprint(&r.body).unwrap_or_else(|| "unreadable".into())
                )));
            }
        }
        if let Some(dir) = self.pin.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::File(e.to_string()))?;
        }
        std::fs::write(&self.pin, &r.body)
            .map_err(|e| Error::File(format!("cannot pin the CA in {}: {e}", self.pin.display())))?;
        Ok(r.body)
    }

    /// `GET path`, verified against the pinned CA; the body goes to `save` when given.
    pub async fn get(
        &self,
        path: &str,
        range: Option<&str>,
        save: Option<&Path>,
        timeout: Duration,
    ) -> Result<Response, Error> {
        let headers: Vec<(String, String)> = range
            .map(|r| ("range".to_string(), r.to_string()))
            .into_iter()
            .collect();
        self.send("GET", path, &headers, save, Receive::default(), timeout)
            .await
    }

    /// Any request, verified against the pinned CA; the body goes to `save` when given.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        save: Option<&Path>,
        receive: Receive,
        timeout: Duration,
    ) -> Result<Response, Error> {
        let pem = self.pin_ca(timeout).await?;
        let config = self.config(Some(&pem))?;
        self.request(config, method, path, headers, save, receive, timeout)
            .await
            .map_err(|e| self.explain(e))
    }

    /// A TLS connection to the device, its certificate checked by `config`.
    async fn connect(
        &self,
        config: rustls::ClientConfig,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, Error> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| Error::Connect(format!("cannot connect to {}:{}: {e}", self.host, self.port)))?;
        let name = ServerName::try_from(self.host.clone()).map_err(|e| Error::Connect(e.to_string()))?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| Error::Connect(format!("TLS with {}:{} failed: {e}", self.host, self.port)))
    }

    /// `e`, with what to do when it says the device's certificate is not the pinned CA's.
    fn explain(&self, e: Error) -> Error {
        let m = e.to_string();
        if m.contains("UnknownIssuer") || m.contains("BadSignature") || m.contains("invalid peer certificate") {
            Error::Pin(format!(
                "{m}: the device's certificate does not chain to the CA pinned in {}; if the device was reset on purpose, delete that file to pin its new CA",
                self.pin.display()
            ))
        } else {
            e
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn request(
        &self,
        config: rustls::ClientConfig,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        save: Option<&Path>,
        receive: Receive,
        timeout: Duration,
    ) -> Result<Response, Error> {
        let work = async {
            let tls = self.connect(config).await?;
            let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| Error::Connect(e.to_string()))?;
            tokio::spawn(conn);
            let mut req = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header("host", format!("{}:{}", self.host, self.port));
            for (k, v) in headers {
                req = req.header(k.as_str(), v.as_str());
            }
            if let Some(t) = &self.token {
                use base64::Engine;
                let creds = base64::engine::general_purpose::STANDARD.encode(format!("token:{t}"));
                req = req.header("authorization", format!("Basic {creds}"));
            }
            let req = req
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .map_err(|e| Error::Request(e.to_string()))?;
            let resp = send
                .send_request(req)
                .await
                .map_err(|e| Error::Request(format!("{method} {path}: {e}")))?;
            let status = resp.status().as_u16();
            let headers = resp
                .headers()
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let mut file = match save {
                Some(p) => Some(
                    tokio::fs::OpenOptions::new()
                        .create(true)
                        .write(true)
                        .append(receive.append)
                        .truncate(!receive.append)
                        .open(p)
                        .await
                        .map_err(|e| Error::File(format!("{}: {e}", p.display())))?,
                ),
                None => None,
            };
            let mut body = resp.into_body();
            let mut hasher = Sha256::new();
            let mut kept = Vec::new();
            let mut len = 0u64;
            loop {
                let next = match receive.stall {
                    Some(stall) => tokio::time::timeout(stall, body.frame()).await.map_err(|_| {
                        Error::Request(format!("{method} {path}: no data for {stall:?}, the transfer stalled"))
                    })?,
                    None => body.frame().await,
                };
                let Some(frame) = next else { break };
                let frame =
                    frame.map_err(|e| Error::Request(format!("{method} {path}: the transfer broke off: {e}")))?;
                if let Some(data) = frame.data_ref() {
                    hasher.update(data);
                    len += data.len() as u64;
                    match file.as_mut() {
                        Some(f) => f.write_all(data).await.map_err(|e| Error::File(e.to_string()))?,
                        None => kept.extend_from_slice(data),
                    }
                }
            }
            if let Some(mut f) = file {
                f.flush().await.map_err(|e| Error::File(e.to_string()))?;
            }
            Ok(Response {
                status,
                headers,
                body_len: len,
                body_sha256: hasher.finalize().iter().map(|b| format!("{b:02x}")).collect(),
                body: kept,
            })
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| Error::TimedOut(format!("{method} {path} did not finish within {timeout:?}")))?
    }
}

/// A connection held open to the server: `slow` ones complete TLS and then send a request
/// header a byte a second. Returns when the server closes it (or never, until aborted).
pub async fn hold(target: HttpsTarget, slow: bool) -> Result<Duration, Error> {
    use tokio::io::AsyncReadExt;
    let start = std::time::Instant::now();
    let mut tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| Error::Connect(e.to_string()))?;
    if !slow {
        let mut buf = [0u8; 1];
        let _ = tcp.read(&mut buf).await;
        return Ok(start.elapsed());
    }
    let pem = target.pin_ca(Duration::from_secs(10)).await?;
    let config = target.config(Some(&pem))?;
    let name = ServerName::try_from(target.host.clone()).map_err(|e| Error::Connect(e.to_string()))?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| Error::Connect(e.to_string()))?;
    let request = b"GET /noreya-nexus/certificates/ca.pem HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    for byte in request.iter().chain(std::iter::repeat(&b'a')) {
        if tls.write_all(std::slice::from_ref(byte)).await.is_err() || tls.flush().await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(start.elapsed())
}
