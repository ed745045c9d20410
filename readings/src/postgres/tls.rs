//! TLS to PostgreSQL with rustls, following libpq's `sslmode`.
//!
//! | mode | TLS | certificate check |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default) | when the server offers it, else a plain connection | none; the chain (as `verify-ca`) when a root certificate file is given |
//! | `require` | always | none; the chain (as `verify-ca`) when a root certificate file is given |
//! | `verify-ca` | always | the chain, against the root certificate file (required), not the host name |
//! | `verify-full` | always | the chain, against the system's roots plus the root certificate file if given, and the host name |
//!
//! As in libpq, `verify-ca` and a root certificate file with `prefer` / `require` trust only
//! that file: a chain check without the host name proves nothing against the public roots.
//! `sslrootcert=system` (libpq 16) means the system's roots; it implies `verify-full` and
//! refuses weaker modes.
//!
//! The crypto provider is rustls' aws-lc-rs one, the provider the AWS SDK's HTTPS client
//! already uses, passed explicitly (the process-wide default is not touched).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, WebPkiServerVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use thiserror::Error;
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode` values (all but `allow`, which tokio-postgres cannot do).
/// Ordered from weakest to strictest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// What tokio-postgres is asked for: it negotiates TLS; certificates are this module's job.
    pub fn negotiation(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Pg;
        match self {
            SslMode::Disable => Pg::Disable,
            SslMode::Prefer => Pg::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Pg::Require,
        }
    }
}

impl FromStr for SslMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            "allow" => Err("`allow` is not supported; use `prefer` or `disable`".into()),
            _ => Err("expected disable, prefer, require, verify-ca or verify-full".into()),
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        })
    }
}

/// Where trusted certificate authorities come from besides the mode's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// `sslrootcert=system`: the system's roots only.
    System,
    /// A PEM file of one or more CA certificates.
    File(PathBuf),
}

impl RootCert {
    /// `system`, or a file's path.
    pub fn from_setting(s: &str) -> RootCert {
        if s == "system" {
            RootCert::System
        } else {
            RootCert::File(PathBuf::from(s))
        }
    }
}

/// The TLS part of a connection: `sslmode` and `sslrootcert`, from the connection string,
/// the secret, or `DB_SSLMODE` / `DB_SSL_ROOT_CERT`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// `None`: `verify-full` with `sslrootcert=system`, else `prefer`.
    pub mode: Option<SslMode>,
    pub root_cert: Option<RootCert>,
}

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("sslmode={mode} needs a root certificate file (sslrootcert or DB_SSL_ROOT_CERT): checking a chain without the host name against the public roots proves nothing")]
    NeedsRootCert { mode: SslMode },
    #[error("sslmode={mode} may not be used with sslrootcert=system; use verify-full")]
    WeakModeWithSystemRoots { mode: SslMode },
    #[error("cannot read the root certificate file {}: {source}", path.display())]
    ReadRootCert {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the root certificate file {} holds no usable PEM certificate{}", path.display(), reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default())]
    NoRootCert {
        path: PathBuf,
        reason: Option<String>,
    },
    #[error("no system root certificates could be loaded{}", if reasons.is_empty() { String::new() } else { format!(": {reasons}") })]
    NoSystemRoots { reasons: String },
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS setup failed: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
}

impl TlsSettings {
    /// The mode in effect.
    pub fn mode(&self) -> SslMode {
        match (self.mode, &self.root_cert) {
            (Some(mode), _) => mode,
            (None, Some(RootCert::System)) => SslMode::VerifyFull,
            (None, _) => SslMode::Prefer,
        }
    }

    /// The connector for tokio-postgres. Reads the root certificate file and, for
    /// `verify-full`, the system's roots, once: call it once per pool.
    pub fn connector(&self) -> Result<MakeRustlsConnect, TlsError> {
        let mode = self.mode();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let file = match &self.root_cert {
            Some(RootCert::File(path)) => Some(path.as_path()),
            _ => None,
        };
        let system = matches!(self.root_cert, Some(RootCert::System));
        if system && mode != SslMode::VerifyFull {
            return Err(TlsError::WeakModeWithSystemRoots { mode });
        }
        let verifier: Arc<dyn ServerCertVerifier> = match (mode, file) {
            (SslMode::VerifyFull, _) => {
                let mut roots = system_roots()?;
                if let Some(path) = file {
                    add_pem_file(&mut roots, path)?;
                }
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()?
            }
            (SslMode::VerifyCa, None) => return Err(TlsError::NeedsRootCert { mode }),
            (SslMode::VerifyCa | SslMode::Require | SslMode::Prefer, Some(path)) => {
                let mut roots = RootCertStore::empty();
                add_pem_file(&mut roots, path)?;
                Arc::new(NoHostNameCheck {
                    roots: Some(Arc::new(roots)),
                    provider: provider.clone(),
                })
            }
            (SslMode::Require | SslMode::Prefer | SslMode::Disable, _) => {
                Arc::new(NoHostNameCheck {
                    roots: None,
                    provider: provider.clone(),
                })
            }
        };
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        // What libpq 17 sends; required by servers when `sslnegotiation=direct`.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(MakeRustlsConnect::new(config))
    }
}

fn add_pem_file(roots: &mut RootCertStore, path: &Path) -> Result<(), TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::ReadRootCert {
        path: path.to_owned(),
        source,
    })?;
    let mut certs = Vec::new();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        certs.push(cert.map_err(|e| TlsError::NoRootCert {
            path: path.to_owned(),
            reason: Some(e.to_string()),
        })?);
    }
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TlsError::NoRootCert {
            path: path.to_owned(),
            reason: None,
        });
    }
    Ok(())
}

/// The platform's trusted roots (on Linux the system bundle; `SSL_CERT_FILE` /
/// `SSL_CERT_DIR` override it).
fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let reasons = found
            .errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        return Err(TlsError::NoSystemRoots { reasons });
    }
    Ok(roots)
}

/// `verify-ca` (and `prefer` / `require` with a root certificate file): the chain must lead
/// to a trusted root; the host name is not checked. Without roots (`prefer` / `require`
/// alone), the certificate is not checked at all: encryption without authentication, as
/// libpq does. Either way the handshake's signatures are checked against the presented key.
#[derive(Debug)]
struct NoHostNameCheck {
    roots: Option<Arc<RootCertStore>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for NoHostNameCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print_as_libpq_spells_them() {
        for s in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            assert_eq!(s.parse::<SslMode>().unwrap().to_string(), s);
        }
        assert!("allow"
            .parse::<SslMode>()
            .unwrap_err()
            .contains("not supported"));
        assert!("verify_full".parse::<SslMode>().is_err());
    }

    #[test]
    fn default_mode_is_prefer_or_verify_full_with_system_roots() {
        assert_eq!(TlsSettings::default().mode(), SslMode::Prefer);
        let system = TlsSettings {
            mode: None,
            root_cert: Some(RootCert::System),
        };
        assert_eq!(system.mode(), SslMode::VerifyFull);
    }

    #[test]
    fn verify_ca_needs_a_root_certificate_file() {
        let s = TlsSettings {
            mode: Some(SslMode::VerifyCa),
            root_cert: None,
        };
        let e = s.connector().err().expect("refused");
        assert!(e.to_string().contains("root certificate"), "{e}");
    }

    #[test]
    fn system_roots_refuse_weaker_modes() {
        let s = TlsSettings {
            mode: Some(SslMode::Require),
            root_cert: Some(RootCert::System),
        };
        let e = s.connector().err().expect("refused");
        assert!(e.to_string().contains("verify-full"), "{e}");
    }

    #[test]
    fn a_missing_or_empty_root_certificate_file_is_named() {
        let s = TlsSettings {
            mode: Some(SslMode::VerifyFull),
            root_cert: Some(RootCert::File("/nonexistent/ca.pem".into())),
        };
        let e = s.connector().err().expect("refused");
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");

        let empty = std::env::temp_dir().join(format!("empty-ca-{}.pem", std::process::id()));
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let s = TlsSettings {
            mode: Some(SslMode::Require),
            root_cert: Some(RootCert::File(empty.clone())),
        };
        let e = s.connector().err().expect("refused");
        std::fs::remove_file(&empty).unwrap();
        assert!(e.to_string().contains("no usable PEM certificate"), "{e}");
    }
}
