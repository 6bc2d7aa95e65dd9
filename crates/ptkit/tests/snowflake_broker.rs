//! The built `snowflake-broker` executable (`ptkit snowflake-broker`): usage errors, help,
//! version, and a plain-HTTP run with SIGHUP and SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn ptkit() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ptkit"))
}

fn broker(args: &[&str]) -> Command {
    let mut c = Command::new(ptkit());
    c.arg("snowflake-broker").args(args);
    c
}

#[test]
fn broker_bad_flags_print_one_line_and_exit_2() {
    for args in [
        &["-bogus"][..],
        &["--addr"],
        &["-disable-tls=perhaps"],
        &[],
        &["--cert", "only-a-cert.pem"],
        &["-disable-tls", "stray-argument"],
    ] {
        let out = broker(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("snowflake-broker: "), "{stderr}");
        assert!(out.stdout.is_empty());
    }
    let out = broker(&["-bogus"]).output().unwrap();
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "snowflake-broker: flag provided but not defined: -bogus (see --help)\n"
    );
}

#[test]
fn broker_help_and_version() {
    for flag in ["-h", "--help", "-help"] {
        let out = broker(&[flag]).output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        let help = String::from_utf8(out.stdout).unwrap();
        for needle in [
            "--allowed-relay-pattern",
            "--allow-unknown-nat-pairing",
            "--bridge-list-path",
            "EXAMPLES",
        ] {
            assert!(help.contains(needle), "{needle}");
        }
    }
    let out = broker(&["-version"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .starts_with("snowflake-broker (ptkit ")
    );
}

#[test]
fn broker_config_errors_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("bridges.jsonl");
    std::fs::write(&list, "{\"unknown\":1}\n").unwrap();
    let out = broker(&[
        "-disable-tls",
        "-addr",
        "127.0.0.1:0",
        "-disable-geoip",
        "-bridge-list-path",
    ])
    .arg(&list)
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("unknown key")
    );
}

#[test]
fn broker_serves_plain_http_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("metrics.log");
    let mut child = broker(&[
        "--disable-tls",
        "--addr",
        "127.0.0.1:0",
        "--disable-geoip",
        "--metrics-log",
    ])
    .arg(&metrics)
    .env("RUST_LOG", "info")
    .stderr(Stdio::piped())
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut addr = None;
    let mut line = String::new();
    while addr.is_none() {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "broker exited early"
        );
        if let Some(rest) = line.split("addr=").nth(1) {
            addr = rest.split_whitespace().next().map(str::to_owned);
        }
    }
    let addr: std::net::SocketAddr = addr.unwrap().parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reply = rt.block_on(ptkit_snowflake::broker::http_client::request(
        addr,
        http::Method::GET,
        "/robots.txt",
        &[],
        "",
    ));
    assert_eq!(&reply.unwrap().body[..], b"User-agent: *\nDisallow: /\n");
    assert!(metrics.exists(), "the metrics log is created at start");
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP does not stop the broker"
    );
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
    assert!(rest.contains("SIGHUP"), "{rest}");
}
