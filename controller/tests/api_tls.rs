//! HTTPS for the REST API: a certificate the fleet CA issues
//! (`--tls self`), or the operator's own files.

mod support;

use flotilla_controller::config::RestTls;
use reqwest::StatusCode;
use support::{config_for, TestServer};

#[tokio::test]
async fn self_issued_https_is_verified_with_the_fleet_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config_for(dir.path());
    config.rest_tls = RestTls::SelfIssued;
    let t = TestServer::start_with(dir, config).await;
    assert!(t.base.starts_with("https://127.0.0.1:"), "{}", t.base);
    // A client that trusts the fleet CA gets in; the token flow works.
    let token = t.admin_token().await;
    assert_eq!(t.get("/v3/alm/stack", &token).await.status, StatusCode::OK);
    // One that does not trust it is refused at the handshake.
    let stranger = reqwest::Client::new();
    assert!(stranger.get(t.url("/healthz")).send().await.is_err());
    // Plain HTTP on the HTTPS port gets no API answer.
    let plain = t.url("/healthz").replacen("https://", "http://", 1);
    let answered = stranger.get(&plain).send().await;
    assert!(
        answered.is_err() || !answered.as_ref().is_ok_and(|r| r.status().is_success()),
        "{answered:?}"
    );
    t.stop().await;
}

#[tokio::test]
async fn the_operators_certificate_files_are_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    // An operator's own CA and a certificate for 127.0.0.1.
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("cert");
    let files = tempfile::tempdir().expect("tempdir");
    let (cert_path, key_path) = (files.path().join("cert.pem"), files.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).expect("cert");
    std::fs::write(&key_path, key.serialize_pem()).expect("key");
    let mut config = config_for(dir.path());
    config.rest_tls = RestTls::Files {
        cert: cert_path,
        key: key_path,
    };
    let server = flotilla_controller::server::Server::start(config)
        .await
        .expect("starts");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).expect("pem"))
        .build()
        .expect("client");
    let reply = client
        .get(format!("https://{}/healthz", server.addr))
        .send()
        .await
        .expect("https answers");
    assert_eq!(reply.status(), StatusCode::OK);
    server.stop().await.expect("clean stop");

    // A key that does not fit the certificate is a clear start-up error.
    let dir = tempfile::tempdir().expect("tempdir");
    let other = files.path().join("other-key.pem");
    std::fs::write(
        &other,
        rcgen::KeyPair::generate().expect("key").serialize_pem(),
    )
    .expect("key");
    let mut config = config_for(dir.path());
    config.rest_tls = RestTls::Files {
        cert: files.path().join("cert.pem"),
        key: other,
    };
    let err = match flotilla_controller::server::Server::start(config).await {
        Ok(_) => panic!("a mismatched key must not start"),
        Err(err) => format!("{err:#}"),
    };
    assert!(err.contains("do not fit"), "{err}");
}
