//! The device's TLS identity: a CA and a server certificate (for `noreya-nexus.local`,
//! `localhost`, `127.0.0.1` and configured names), made with rcgen on first start and kept.
//! The server certificate is remade from the kept CA key when the configured names change.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::state::write_atomic;

/// Names every server certificate covers.
pub const DEFAULT_NAMES: [&str; 3] = ["noreya-nexus.local", "localhost", "127.0.0.1"];

/// What the HTTPS server needs.
pub struct TlsIdentity {
    /// The CA certificate clients pin, PEM.
    pub ca_pem: String,
    pub server: Arc<rustls::ServerConfig>,
}

fn tls_err(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{what}: {e}"))
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "NOREYA NEXUS emulator");
    dn.push(DnType::CommonName, "NOREYA NEXUS device CA");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2049, 12, 31);
    p
}

/// Loads the identity from `dir`, making what is missing.
pub fn load_or_make(dir: &Path, extra_names: &[String]) -> io::Result<TlsIdentity> {
    fs::create_dir_all(dir).map_err(|e| tls_err(&format!("cannot create {}", dir.display()), e))?;
    let ca_pem_path = dir.join("ca.pem");
    let ca_key_path = dir.join("ca-key.pem");
    let (ca_pem, ca_key) = match (fs::read_to_string(&ca_pem_path), fs::read_to_string(&ca_key_path)) {
        (Ok(cert), Ok(key)) => (
            cert,
            KeyPair::from_pem(&key).map_err(|e| {
                tls_err(
                    "the kept CA key is unreadable; remove the TLS directory to make a new CA",
                    e,
                )
            })?,
        ),
        _ => {
            let key = KeyPair::generate().map_err(|e| tls_err("cannot make a CA key", e))?;
            let cert = ca_params()
                .self_signed(&key)
                .map_err(|e| tls_err("cannot make the CA", e))?;
            write_atomic(&ca_key_path, key.serialize_pem().as_bytes(), 0o600)?;
            write_atomic(&ca_pem_path, cert.pem().as_bytes(), 0o644)?;
            tracing::info!("made a new device CA in {}", dir.display());
            (cert.pem(), key)
        }
    };

    let mut names: Vec<String> = DEFAULT_NAMES.iter().map(|s| s.to_string()).collect();
    for n in extra_names {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    let names_line = names.join(",");
    let cert_path = dir.join("server.pem");
    let key_path = dir.join("server-key.pem");
    let names_path = dir.join("server-names");
    let kept = match (
        fs::read_to_string(&cert_path),
        fs::read_to_string(&key_path),
        fs::read_to_string(&names_path),
    ) {
        (Ok(c), Ok(k), Ok(n)) if n == names_line => Some((c, k)),
        _ => None,
    };
    let (cert_pem, key_pem) = match kept {
        Some(pair) => pair,
        None => {
            let key = KeyPair::generate().map_err(|e| tls_err("cannot make a server key", e))?;
            let mut params = CertificateParams::new(names.clone()).map_err(|e| tls_err("bad https.names entry", e))?;
            params.distinguished_name.push(DnType::CommonName, DEFAULT_NAMES[0]);
            params.use_authority_key_identifier_extension = true;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.not_before = rcgen::date_time_ymd(2024, 1, 1);
            params.not_after = rcgen::date_time_ymd(2049, 12, 31);
            let issuer = Issuer::new(ca_params(), &ca_key);
            let cert = params
                .signed_by(&key, &issuer)
                .map_err(|e| tls_err("cannot sign the server certificate", e))?;
            write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
            write_atomic(&cert_path, cert.pem().as_bytes(), 0o644)?;
            write_atomic(&names_path, names_line.as_bytes(), 0o644)?;
            tracing::info!(names = %names_line, "made a new server certificate");
            (cert.pem(), key.serialize_pem())
        }
    };

    let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| tls_err("the kept server certificate is unreadable", e))?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| tls_err("the kept server key is unreadable", e))?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("TLS setup", e))?
        .with_no_client_auth()
        .with_single_cert(vec![cert_der], key_der)
        .map_err(|e| tls_err("TLS setup", e))?;
    Ok(TlsIdentity {
        ca_pem,
        server: Arc::new(server),
    })
}
