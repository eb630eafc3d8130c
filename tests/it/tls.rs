//! HTTPS on the listener: a certificate made here, served, and replaced on SIGHUP.

use std::path::Path;
use std::process::Command;

use crate::harness::*;

/// A self-signed certificate for 127.0.0.1 from the openssl command line tool.
fn make_certificate(dir: &Path, name: &str) -> Option<reqwest::Certificate> {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-subj", &format!("/CN={name}")])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    match made {
        Ok(output) if output.status.success() => {}
        _ => {
            let why = "the openssl tool is needed to make a test certificate";
            assert!(std::env::var_os("CI").is_none(), "{why}");
            println!("skipped: {why}");
            return None;
        }
    }
    Some(reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap())
}

fn trusting(certificate: reqwest::Certificate) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(certificate)
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_listener_speaks_https_and_reloads_its_certificate_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let Some(first) = make_certificate(dir.path(), "first") else {
        return;
    };
    let sink = Sink::start().await;
    std::fs::copy(dir.path().join("first.pem"), dir.path().join("cert.pem")).unwrap();
    std::fs::copy(dir.path().join("first.key"), dir.path().join("cert.key")).unwrap();
    let tls = format!(
        "shutdown_grace = \"5s\"\ntls = {{ cert = \"{}\", key = \"{}\" }}",
        dir.path().join("cert.pem").display(),
        dir.path().join("cert.key").display()
    );
    let text = config(dir.path(), &sink.url, "").replace("shutdown_grace = \"5s\"", &tls);
    let relay = Relay::child(dir.path(), &text);
    assert!(relay.url.starts_with("https://"), "{}", relay.url);
    let response = trusting(first)
        .post(relay.hook_url("gitlab"))
        .header("x-gitlab-token", TOKEN)
        .body(push_body(1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    sink.wait_for(1).await;
    // Plain HTTP to the HTTPS port gets nowhere.
    assert!(
        reqwest::get(relay.url.replace("https", "http") + "/healthz")
            .await
            .is_err()
    );

    // A renewed certificate is picked up on SIGHUP, without a restart.
    let second = make_certificate(dir.path(), "second").unwrap();
    let renewed = trusting(second);
    let health = format!("{}/healthz", relay.url);
    assert!(
        renewed.get(&health).send().await.is_err(),
        "trusted before renewal"
    );
    std::fs::copy(dir.path().join("second.pem"), dir.path().join("cert.pem")).unwrap();
    std::fs::copy(dir.path().join("second.key"), dir.path().join("cert.key")).unwrap();
    Command::new("kill")
        .args(["-HUP", &relay.pid().to_string()])
        .status()
        .unwrap();
    eventually("the certificate to be reloaded", || async {
        renewed.get(&health).send().await.ok().map(drop)
    })
    .await;
}
