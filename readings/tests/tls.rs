//! TLS to PostgreSQL through `Store`, for every `sslmode`, against a private cluster serving a
//! certificate from a CA the test makes, and against the shared test cluster (no TLS).

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use readings::config::DbConfig;
use readings::postgres::tls::{RootCert, SslMode};
use readings::testing::{error_chain, store_value, PrivateCluster};
use readings::Store;

/// A CA and a server certificate it signed for `localhost` and `127.0.0.1`, as PEM.
struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
}

fn make_ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).expect("self-signed CA");
    (params, key, cert.pem())
}

fn pki() -> Pki {
    let (ca_params, ca_key, ca) = make_ca("sensor-pipeline test CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &issuer).expect("server certificate");
    Pki {
        ca,
        server_cert: cert.pem(),
        server_key: key.serialize_pem(),
    }
}

/// A private cluster with `ssl=on` and the certificate of `pki`.
fn tls_cluster(pki: &Pki) -> PrivateCluster {
    let mut cluster = PrivateCluster::prepare();
    let cert = cluster.file("server.crt", pki.server_cert.as_bytes());
    let key = cluster.file("server.key", pki.server_key.as_bytes());
    cluster.set("ssl", "on");
    cluster.set("ssl_cert_file", cert.display());
    cluster.set("ssl_key_file", key.display());
    cluster.launch();
    cluster
}

fn write_temp(dir: &Path, name: &str, contents: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write temp file");
    path
}

fn config(url: String) -> DbConfig {
    DbConfig {
        url,
        pool_size: 1,
        connect_timeout: std::time::Duration::from_secs(5),
        ..Default::default()
    }
}

/// Connects as `config` says through a `Store`'s pool and answers whether the session uses
/// TLS, or the error (setup or connection) with its causes.
async fn ssl_in_use(config: &DbConfig) -> Result<bool, String> {
    let store = Store::new(config).map_err(|e| error_chain(&e))?;
    store_value(
        &store,
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .await
}

/// What a case must give: a TLS session, a plain one, or an error containing this text.
#[derive(Debug)]
enum Expect {
    Tls,
    Plain,
    Error(&'static str),
}

/// Runs every case, then fails listing each one that did not go as expected.
async fn check(cases: Vec<(&str, DbConfig, Expect)>) {
    let mut failures = Vec::new();
    for (name, config, expect) in cases {
        let got = ssl_in_use(&config).await;
        let ok = match (&expect, &got) {
            (Expect::Tls, Ok(true)) | (Expect::Plain, Ok(false)) => true,
            (Expect::Error(text), Err(e)) => e.contains(text),
            _ => false,
        };
        println!("{name}: {got:?}");
        if !ok {
            failures.push(format!("{name}: expected {expect:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[tokio::test]
async fn sslmodes_against_a_server_with_a_self_signed_certificate() {
    let pki = pki();
    let cluster = tls_cluster(&pki);
    let port = cluster.port;
    let temp = cluster.dir.with_file_name("client");
    let ca = write_temp(&temp, "ca.pem", &pki.ca);
    let (_, _, other_ca) = make_ca("some other CA");
    let other_ca = write_temp(&temp, "other-ca.pem", &other_ca);
    let ca = ca.display();
    let other_ca = other_ca.display();
    let url = |params: &str| format!("postgres://postgres@127.0.0.1:{port}/sensors?{params}");
    let kv = |host: &str, params: &str| {
        format!("host={host} hostaddr=127.0.0.1 port={port} user=postgres dbname=sensors {params}")
    };

    check(vec![
        (
            "require",
            config(kv("localhost", "sslmode=require")),
            Expect::Tls,
        ),
        (
            "prefer (the default) takes TLS when offered",
            config(url("")),
            Expect::Tls,
        ),
        (
            "verify-full with the CA, by IP address",
            config(url(&format!("sslmode=verify-full&sslrootcert={ca}"))),
            Expect::Tls,
        ),
        (
            "verify-full with the CA, by name",
            config(kv(
                "localhost",
                &format!("sslmode=verify-full sslrootcert='{ca}'"),
            )),
            Expect::Tls,
        ),
        (
            "verify-full without the CA",
            config(url("sslmode=verify-full")),
            Expect::Error("invalid peer certificate: UnknownIssuer"),
        ),
        (
            "verify-full to a name not in the certificate",
            config(kv(
                "db.invalid",
                &format!("sslmode=verify-full sslrootcert={ca}"),
            )),
            Expect::Error("invalid peer certificate: certificate not valid for name"),
        ),
        (
            "verify-ca with the CA, to a name not in the certificate",
            config(kv(
                "db.invalid",
                &format!("sslmode=verify-ca sslrootcert={ca}"),
            )),
            Expect::Tls,
        ),
        (
            "verify-ca without a CA file",
            config(url("sslmode=verify-ca")),
            Expect::Error("needs a root certificate file"),
        ),
        (
            "require with a root certificate checks the chain",
            config(url(&format!("sslmode=require&sslrootcert={other_ca}"))),
            Expect::Error("invalid peer certificate: UnknownIssuer"),
        ),
        ("disable", config(url("sslmode=disable")), Expect::Plain),
        (
            "DB_SSLMODE and DB_SSL_ROOT_CERT override the connection string",
            DbConfig {
                ssl_mode: Some(SslMode::VerifyFull),
                ssl_root_cert: Some(RootCert::File(ca.to_string().into())),
                ..config(url(&format!("sslmode=disable&sslrootcert={other_ca}")))
            },
            Expect::Tls,
        ),
        (
            "DB_SSLMODE never weakens the connection string's sslmode",
            DbConfig {
                ssl_mode: Some(SslMode::Require),
                ..config(url("sslmode=verify-full"))
            },
            Expect::Error("invalid peer certificate: UnknownIssuer"),
        ),
    ])
    .await;
}

#[tokio::test]
async fn sslmodes_against_a_server_without_tls() {
    let admin = std::env::var("TEST_DATABASE_URL")
        .expect("TEST_DATABASE_URL is set: run the tests with scripts/test");
    let with = |params: &str| config(format!("{admin}?{params}"));
    check(vec![
        (
            "require",
            with("sslmode=require"),
            Expect::Error("server does not support TLS"),
        ),
        (
            "prefer falls back to a plain connection",
            with("sslmode=prefer"),
            Expect::Plain,
        ),
        ("disable", with("sslmode=disable"), Expect::Plain),
    ])
    .await;
}
