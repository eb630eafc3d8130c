//! TLS to the database: a private cluster that accepts only TLS connections, with a
//! certificate for 127.0.0.1 from a CA the test makes. With `sslmode=require` and that CA as
//! `sslrootcert`, hookrelay stores and delivers; trusting only the public roots, it refuses
//! to start and says why.

use std::path::Path;
use std::process::Command;

use crate::cluster::Cluster;
use crate::harness::*;

/// A CA and a server certificate for 127.0.0.1 signed by it, in `dir`.
fn certificates(dir: &Path) -> bool {
    let run = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    std::fs::write(dir.join("san.cnf"), "subjectAltName = IP:127.0.0.1\n").unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]) && run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]) && run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.cnf",
        "-out",
        "server.pem",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_with_the_servers_ca_it_stores_and_delivers_and_with_other_roots_it_refuses() {
    let Some(cluster) = Cluster::create_with(|dir| {
        assert!(certificates(dir), "openssl could not make certificates");
        let data = dir.join("data");
        // TLS only over TCP; the socket (for pg_ctl) stays open.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        let _ = std::fs::set_permissions(
            dir.join("server.key"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        );
        format!(
            "-c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            dir.join("server.pem").display(),
            dir.join("server.key").display()
        )
    }) else {
        return;
    };
    let ca = cluster.dir_path().join("ca.pem");
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let text = config(dir.path(), &sink.url, "");
    let store_line = text
        .lines()
        .find(|l| l.starts_with("store = "))
        .unwrap()
        .to_owned();
    let with_store = |url: String| {
        text.replace(&store_line, &format!("store = \"{url}\""))
            + &format!(
                "\n[api]\nsocket = \"{}\"\n",
                dir.path().join("api.sock").display()
            )
    };
    let base = format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port);

    // Without TLS the cluster turns the connection away: TLS is what makes the rest work.
    let plain = serve_refused(dir.path(), "plain.toml", &with_store(base.clone()));
    assert!(
        plain.contains("no encryption") || plain.contains("pg_hba"),
        "{plain}"
    );
    // Only the public roots: the test CA is not among them.
    let untrusted = serve_refused(
        dir.path(),
        "untrusted.toml",
        &with_store(format!("{base}?sslmode=require")),
    );
    assert!(
        untrusted.to_lowercase().contains("certificate"),
        "{untrusted}"
    );

    let url = format!("{base}?sslmode=require&sslrootcert={}", ca.display());
    let relay = Relay::child(dir.path(), &with_store(url));
    let client = reqwest::Client::new();
    assert_eq!(
        post_push_to(&client, &relay.hook_url("gitlab"), 7).await,
        202
    );
    sink.wait_for(1).await;
}
