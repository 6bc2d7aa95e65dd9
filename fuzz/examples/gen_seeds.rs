//! Writes the seed corpus `fuzz/corpus/<target>/seed-<name>` from the vectors of
//! `shared/specs/pt1-extorport.md` §7, and checks every seed: structured inputs are decoded
//! again with the real `arbitrary` and compared with what was meant, and every seed is run
//! through its harness (so it must not trip an invariant) and must reach the outcome noted.
//!
//! Run from the repository root: `cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds`

use std::fs;
use std::path::{Path, PathBuf};

use arbitrary::{Arbitrary, Unstructured};
use ptkit_fuzz::seed::Enc;
use ptkit_fuzz::{EnvInput, ExtOrStep, Var};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

struct Out {
    root: PathBuf,
    count: usize,
}

impl Out {
    fn dir(&self, target: &str) -> PathBuf {
        let d = self.root.join(target);
        fs::create_dir_all(&d).expect("mkdir");
        // Regenerate this target's seeds from scratch; fuzzer-found inputs are left alone.
        for e in fs::read_dir(&d).expect("readdir").flatten() {
            if e.file_name().to_string_lossy().starts_with("seed-") {
                fs::remove_file(e.path()).expect("rm");
            }
        }
        d
    }

    fn write(&mut self, dir: &Path, name: &str, bytes: &[u8]) {
        fs::write(dir.join(format!("seed-{name}")), bytes).expect("write");
        self.count += 1;
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut out = Out { root, count: 0 };
    socks(&mut out);
    env(&mut out);
    host_lines(&mut out);
    args(&mut out);
    extorport(&mut out);
    cstring(&mut out);
    proxy_url(&mut out);
    println!("wrote {} seeds under {}", out.count, out.root.display());
}

// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// A finished request with this target.
    Done(&'static str),
    /// An error.
    Fail,
    /// Still waiting for bytes.
    More,
}

fn socks(out: &mut Out) {
    let dir = out.dir("socks_server");
    let args295 = format!("k1=v\\;1;k2=back\\\\slash;k3=x=y;cert={}", "A".repeat(260));
    let a = args295.as_bytes();
    assert_eq!(a.len(), 295);
    let mut domain = hex("05 01 00 03 0b");
    domain.extend(b"example.com\x23\x5a");
    let ipv4 = hex("05 01 00 01 7f000001 235a");
    let auth_kv = hex("01096b65793d76616c75650100");
    let v4_kv = b"\x04\x01\x12\x34\x01\x02\x03\x04key=value\x00".to_vec();
    let v4a = b"\x04\x01\x12\x34\x00\x00\x00\x01key=value\x00hostname\x00".to_vec();
    let v4a_badargs = b"\x04\x01\x12\x34\x00\x00\x00\x01userid\x00hostname\x00".to_vec();
    let cases: Vec<(&str, Vec<Vec<u8>>, Expect)> = vec![
        (
            "v5-noauth-ipv4",
            vec![hex("05 01 00"), ipv4.clone()],
            Expect::Done("127.0.0.1:9050"),
        ),
        (
            "v5-auth-args",
            vec![hex("05 01 02"), auth_kv.clone(), ipv4.clone()],
            Expect::Done("127.0.0.1:9050"),
        ),
        (
            "v5-auth-args-split",
            vec![
                hex("05"),
                hex("02 00 02"),
                hex("01 09 6b65"),
                hex("793d76616c75650100"),
                domain[..8].to_vec(),
                domain[8..].to_vec(),
            ],
            Expect::Done("example.com:9050"),
        ),
        (
            "v5-ipv6",
            vec![
                hex("05 01 00"),
                hex("05 01 00 04 0102030405060708090a0b0c0d0e0f10 235a"),
            ],
            Expect::Done("[102:304:506:708:90a:b0c:d0e:f10]:9050"),
        ),
        (
            "v5-domain",
            vec![hex("05 01 00"), domain.clone()],
            Expect::Done("example.com:9050"),
        ),
        (
            "v5-tor-295-byte-args",
            vec![
                hex("05 02 00 02"),
                cat(&[&[1, 255], &a[..255], &[40], &a[255..]]),
                hex("05 01 00 01 7f000002 115c"),
            ],
            Expect::Done("127.0.0.2:4444"),
        ),
        (
            "v5-bad-version",
            vec![hex("05 01 00"), hex("03 01 00 01 7f000001 235a")],
            Expect::Fail,
        ),
        (
            "v5-bad-command",
            vec![hex("05 01 00"), hex("05 05 00 01 7f000001 235a")],
            Expect::Fail,
        ),
        (
            "v5-bad-atyp",
            vec![hex("05 01 00"), hex("05 01 00 05 7f000001 235a")],
            Expect::Fail,
        ),
        (
            "v5-empty-domain",
            vec![hex("05 01 00"), hex("05 01 00 03 00 235a")],
            Expect::Fail,
        ),
        ("v5-no-method", vec![hex("05 00")], Expect::Fail),
        (
            "v5-methods-0-1-2",
            vec![hex("05 03 00 01 02")],
            Expect::More,
        ),
        ("not-socks", vec![hex("03 01 00")], Expect::Fail),
        (
            "v5-auth-bad-version",
            vec![hex("05 01 02"), cat(&[&[3, 5], b"ABCDE\x05abcde"])],
            Expect::Fail,
        ),
        (
            "v5-auth-no-equals",
            vec![hex("05 01 02"), cat(&[&[1, 5], b"ABCDE\x05abcde"])],
            Expect::Fail,
        ),
        (
            "v5-pipelined",
            vec![cat(&[&hex("05 01 00"), &ipv4])],
            Expect::Fail,
        ),
        ("v4-args", vec![v4_kv], Expect::Done("1.2.3.4:4660")),
        (
            "v4-no-userid",
            vec![hex("04 01 1234 01020304 00")],
            Expect::Done("1.2.3.4:4660"),
        ),
        (
            "v4a-args",
            vec![v4a[..14].to_vec(), v4a[14..].to_vec()],
            Expect::Done("hostname:4660"),
        ),
        (
            "v4a-empty-host",
            vec![b"\x04\x01\x12\x34\x00\x00\x00\x01key=value\x00\x00".to_vec()],
            Expect::Done(":4660"),
        ),
        ("v4a-bad-args", vec![v4a_badargs], Expect::Fail),
        ("v4-bind", vec![hex("04 02 1234 01020304 00")], Expect::Fail),
        (
            "v4-tor-295-byte-args",
            vec![cat(&[&hex("04 01 115c 7f000002"), a, &[0]])],
            Expect::Done("127.0.0.2:4444"),
        ),
        (
            "v4a-no-nul",
            vec![b"\x04\x01\x12\x34\x00\x00\x00\x01key=value\x00hostname".to_vec()],
            Expect::More,
        ),
    ];
    for (name, chunks, expect) in cases {
        let mut e = Enc::new();
        for c in &chunks {
            e.more().slice(c);
        }
        let bytes = e.finish();
        let decoded = Vec::<&[u8]>::arbitrary_take_rest(Unstructured::new(&bytes)).expect("decode");
        let want: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        assert_eq!(decoded, want, "socks seed {name} does not decode");
        let (_, outcome) = ptkit_fuzz::socks_server(&decoded);
        let got = match &outcome {
            Ok(Some(req)) => Expect::Done(Box::leak(req.target.to_string().into_boxed_str())),
            Ok(None) => Expect::More,
            Err(_) => Expect::Fail,
        };
        assert_eq!(got, expect, "socks seed {name}: {outcome:?}");
        out.write(&dir, name, &bytes);
    }
}

// ---------------------------------------------------------------------------------------------

fn env(out: &mut Out) {
    let dir = out.dir("env");
    use Var::*;
    type Case<'a> = (&'a str, EnvInput<'a>, bool);
    let cases: Vec<Case> = vec![
        (
            "client-session",
            EnvInput {
                addr: "1.2.3.4:9999",
                options: "t:k=v=v",
                bindaddr: "alpha-1.2.3.4:1111,beta-[1:2::3:4]:2222",
                wanted: vec!["alpha", "beta", "gamma"],
                vars: vec![
                    (ManagedTransportVer, "1"),
                    (StateLocation, "/tmp/pt-state"),
                    (ExitOnStdinClose, "1"),
                    (Proxy, "socks5://127.0.0.1:8001"),
                    (ClientTransports, "obfs3,obfs4"),
                ],
            },
            true,
        ),
        (
            "server-session",
            EnvInput {
                addr: "[1:2::3:4]:9999",
                options: "t\\:1:k=v;t\\=2:k=v;t\\;3:k=v;t\\\\4:k=v",
                bindaddr: "trebuchet-127.0.0.1:1984,ballista-127.0.0.1:4891",
                wanted: vec!["trebuchet", "ballista"],
                vars: vec![
                    (ManagedTransportVer, "1"),
                    (StateLocation, "/tmp/pt-state"),
                    (ServerTransports, "obfs3,obfs4"),
                    (ServerBindaddr, "obfs3-198.51.100.1:1984"),
                    (Orport, "127.0.0.1:9001"),
                ],
            },
            true,
        ),
        (
            "server-extorport",
            EnvInput {
                addr: "1:2::3:4:9999",
                options: "dummy:shared-secret=a\\;b\\:c\\\\d;dummy:key2=x=y",
                bindaddr: "dummy-0.0.0.0:0,other-[::1]:4443",
                wanted: vec!["dummy", "other"],
                vars: vec![
                    (ManagedTransportVer, "2,1"),
                    (StateLocation, "/tmp/pt-state"),
                    (OutboundBindAddressV4, "192.0.2.1"),
                    (OutboundBindAddressV6, "[2001:db8::1]"),
                    (ServerTransports, "trebuchet,ballista"),
                    (
                        ServerBindaddr,
                        "trebuchet-127.0.0.1:1984,ballista-127.0.0.1:4891",
                    ),
                    (
                        ServerTransportOptions,
                        "trebuchet:secret=nou;trebuchet:cache=/tmp/c;ballista:secret=yes",
                    ),
                    (ExtendedServerPort, "127.0.0.1:5555"),
                    (AuthCookieFile, "/tmp/extended_orport_auth_cookie"),
                ],
            },
            true,
        ),
        (
            "server-options-filtered",
            EnvInput {
                addr: "1.2.3.4:65536",
                options: "scramblesuit:key=banana;automata:rule=110;automata:depth=3",
                bindaddr: "alpha-0.0.0.0:1234,alpha-[::]:1234",
                wanted: vec!["alpha"],
                vars: vec![
                    (ManagedTransportVer, "1,2"),
                    (StateLocation, "/tmp/pt-state"),
                    (ServerTransports, "alpha,beta,gamma"),
                    (ServerBindaddr, "alpha-1.2.3.4:1111,beta-[1:2::3:4]:2222"),
                    (ServerTransportOptions, "alpha:k1=v1;beta:k2=v2;gamma:k3=v3"),
                    (Orport, "[::1]:9001"),
                ],
            },
            true,
        ),
        (
            "version-error",
            EnvInput {
                addr: "1.2.3.4:80 ",
                options: "t:k=v;",
                bindaddr: "alpha-1.2.3.4",
                wanted: vec!["alpha"],
                vars: vec![
                    (ManagedTransportVer, "2"),
                    (ClientTransports, "alpha\\,beta"),
                ],
            },
            false,
        ),
    ];
    for (name, input, ok) in cases {
        let mut e = Enc::new();
        e.slice(input.addr.as_bytes())
            .slice(input.options.as_bytes())
            .slice(input.bindaddr.as_bytes());
        for w in &input.wanted {
            e.more().slice(w.as_bytes());
        }
        e.end();
        for (k, v) in &input.vars {
            let i = Var::ALL.iter().position(|x| x == k).expect("var");
            e.more().variant(i, Var::ALL.len()).slice(v.as_bytes());
        }
        let bytes = e.finish();
        let decoded = EnvInput::arbitrary_take_rest(Unstructured::new(&bytes)).expect("decode");
        assert_eq!(decoded, input, "env seed {name} does not decode");
        let r = ptkit_fuzz::env(&decoded);
        assert_eq!(r.is_ok(), ok, "env seed {name}: {r:?}");
        out.write(&dir, name, &bytes);
    }
}

// ---------------------------------------------------------------------------------------------

fn host_lines(out: &mut Out) {
    let dir = out.dir("host_lines");
    let cases: &[(&str, &str)] = &[
        (
            "arti-methods",
            "VERSION-ERROR no-version\nVERSION 1\nENV-ERROR No TOR_PT_AUTH_COOKIE_FILE when TOR_PT_EXTENDED_SERVER_PORT set\nPROXY DONE\nPROXY-ERROR SOCKS 4 upstream proxies unsupported\nCMETHOD trebuchet socks5 127.0.0.1:19999\nCMETHOD-ERROR trebuchet no rocks available\nCMETHODS DONE\nSMETHOD-ERROR trebuchet no cows available\nSMETHODS DONE\n",
        ),
        ("cmethod", "CMETHOD dummy socks5 127.0.0.1:43753\r\n"),
        ("cmethod-v6", "CMETHOD obfs4 socks4 [::1]:37347"),
        (
            "smethod-args",
            "SMETHOD rot_by_N 198.51.100.1:2323 ARGS:N=13",
        ),
        (
            "smethod-obfs4",
            "SMETHOD obfs4 198.51.100.1:43734 ARGS:cert=HszPy3vWfjsESCEOo9ZBkRv6zQ/1mGHzc8arF0y2SpwFr3WhsMu8rK0zyaoyERfbz3ddFw,iat-mode=0",
        ),
        (
            "smethod-escaped",
            "SMETHOD dummy 127.0.0.1:37361 ARGS:cert=abc\\=\\,def,iat-mode=0",
        ),
        (
            "smethod-bad-args",
            "SMETHOD trebuchet 198.51.100.1:19999 ARGS:iat-mode=fo=o",
        ),
        (
            "log-arti",
            "LOG SEVERITY=debug MESSAGE=\"Connected to bridge A\"\nLOG SEVERITY=debug MESSAGE=\"\\r\\n\\t\"\nLOG SEVERITY=debug MESSAGE=\nLOG SEVERITY=debug MESSAGE=\"\\a\"",
        ),
        (
            "log-octal",
            "LOG SEVERITY=notice MESSAGE=\"octal: \\042q\\042 bs=\\134 nl=\\012 e=\\303\\251 end\"",
        ),
        (
            "log-c-style",
            "LOG SEVERITY=notice MESSAGE=\"c-style: \\\"q\\\" bs=\\\\ tab=\\t hex=\\x41\"",
        ),
        ("log-reordered", "LOG MESSAGE=\"\\7\" SEVERITY=error"),
        (
            "log-tor-rejects",
            "LOG SEVERITY=warning MESSAGE=unquoted\nLOG SEVERITY=notice MESSAGE=two words\nLOG SEVERITY=loud MESSAGE=\"bad severity\"\nLOG SEVERITY=notice\nLOG SEVERITY=notice MESSAGE=\"bad escape \\?\"",
        ),
        (
            "status",
            "STATUS ADDRESS=198.51.100.222:2222 CONNECT=Failed FINGERPRINT=X ERRSTR=\"Connection refused\"\nSTATUS TRANSPORT=obfs4 ADDRESS=198.51.100.123:1234 CONNECT=Success\nSTATUS TYPE=version IMPLEMENTATION=\"lyrebird\" VERSION=\"devel\"",
        ),
        (
            "unknown",
            "FROBNICATE whatever\nCMETHOD dummy socks5 localhost:1080",
        ),
    ];
    for (name, text) in cases {
        ptkit_fuzz::host_lines(text.as_bytes());
        out.write(&dir, name, text.as_bytes());
    }
}

// ---------------------------------------------------------------------------------------------

fn args(out: &mut Out) {
    let dir = out.dir("args");
    let cases: &[(&str, &str, bool, bool)] = &[
        // (name, input, parse_client ok, parse_smethod ok)
        ("empty", "", true, true),
        ("value-with-equals", "a=b=c", true, false),
        ("newline", "key=a\nb", true, true),
        ("escaped-semicolon", "key=value\\;", true, true),
        (
            "repeated",
            "key1=value1;key2=value2;key1=value3",
            true,
            false,
        ),
        ("escaped-keys", "\\;=\\;;\\\\=\\;", true, false),
        ("escaped-equals-key", "a\\=b=c", true, true),
        (
            "tor-encoded",
            "k1=v\\;1;k2=back\\\\slash;k3=x=y;cert=AAAAAAAA",
            true,
            false,
        ),
        ("bad-trailing-backslash", "a=b;key=value\\", false, false),
        ("bad-empty-item", "key=value;", false, true),
        ("smethod-multi", "j=v1,j=v2,j=v3,k=v1,k=v2,k=v3", true, true),
        (
            "smethod-escapes",
            "\\=\\,\\\\=\\=,\\=\\,\\\\=\\,,\\=\\,\\\\=\\\\",
            true,
            true,
        ),
        ("smethod-obfs4", "cert=abc\\=\\,def,iat-mode=0", true, true),
    ];
    for (name, input, client_ok, smethod_ok) in cases {
        let (c, s) = ptkit_fuzz::args(input.as_bytes());
        assert_eq!(
            (c.is_ok(), s.is_ok()),
            (*client_ok, *smethod_ok),
            "args seed {name}: {c:?} {s:?}"
        );
        out.write(&dir, name, input.as_bytes());
    }
}

// ---------------------------------------------------------------------------------------------

/// (name, cookie, server nonce, steps (`None` = forged client hash), done, error text)
type ServerCase<'a> = (
    &'a str,
    [u8; 32],
    [u8; 32],
    Vec<Option<Vec<u8>>>,
    bool,
    Option<&'a str>,
);

struct Extor {
    cookie: [u8; 32],
    nonce: [u8; 32],
    addr: Option<std::net::SocketAddr>,
    transport: &'static str,
    steps: Vec<ExtOrStep>,
}

fn extorport(out: &mut Out) {
    let dir = out.dir("extorport");
    let gliding: [u8; 32] = *b"Gliding wrapt in a brown mantle,";
    let but: [u8; 32] = *b"But when I look ahead up the whi";
    let tor_server = hex(
        "ec80ed6e546d3b36fdfc22fe1315416b029f1ade7610d910878b62eeb7403821
         746520726f616420546865726520697320616c7761797320616e6f7468657220",
    );
    let raw = |b: &[u8]| ExtOrStep::Raw(b.to_vec());
    let okay = raw(&hex("1000 0000"));
    let authed = |reply: ExtOrStep| {
        vec![
            raw(&[1]),
            raw(&[0]),
            ExtOrStep::Forged([9; 32]),
            raw(&[1]),
            reply,
        ]
    };
    let cases: Vec<(&str, Extor, bool, Option<&str>)> = vec![
        (
            "tor-transcript",
            Extor {
                cookie: gliding,
                nonce: but,
                addr: Some("1.2.3.4:5678".parse().expect("addr")),
                transport: "rfc1149",
                steps: vec![
                    raw(&[1]),
                    raw(&[0]),
                    raw(&tor_server),
                    raw(&[1]),
                    okay.clone(),
                ],
            },
            true,
            None,
        ),
        (
            "forged-okay-v6",
            Extor {
                cookie: [7; 32],
                nonce: [0; 32],
                addr: Some("[2001:db8::7]:443".parse().expect("addr")),
                transport: "dummy",
                steps: authed(okay.clone()),
            },
            true,
            None,
        ),
        (
            "forged-okay-done-only",
            Extor {
                cookie: [0; 32],
                nonce: [0; 32],
                addr: None,
                transport: "",
                steps: authed(okay.clone()),
            },
            true,
            None,
        ),
        (
            "deny",
            Extor {
                cookie: [1; 32],
                nonce: [2; 32],
                addr: None,
                transport: "plain",
                steps: authed(raw(&hex("1001 0000"))),
            },
            false,
            Some("denied"),
        ),
        (
            "reply-with-body",
            Extor {
                cookie: [1; 32],
                nonce: [2; 32],
                addr: None,
                transport: "",
                steps: authed(raw(&hex("1000 0001"))),
            },
            false,
            Some("unexpected reply"),
        ),
        (
            "auth-rejected",
            Extor {
                cookie: [3; 32],
                nonce: [4; 32],
                addr: None,
                transport: "",
                steps: vec![raw(&[1]), raw(&[0]), ExtOrStep::Forged([5; 32]), raw(&[0])],
            },
            false,
            Some("rejected"),
        ),
        (
            "no-safe-cookie",
            Extor {
                cookie: [0; 32],
                nonce: [0; 32],
                addr: None,
                transport: "",
                steps: vec![raw(&[2]), raw(&[0])],
            },
            false,
            Some("SAFE_COOKIE"),
        ),
        (
            "wrong-server-hash",
            Extor {
                cookie: gliding,
                nonce: but,
                addr: None,
                transport: "",
                steps: vec![raw(&[1]), raw(&[0]), raw(&[0; 64])],
            },
            false,
            Some("mismatch"),
        ),
        (
            "endless-auth-types",
            Extor {
                cookie: [0; 32],
                nonce: [0; 32],
                addr: None,
                transport: "",
                steps: vec![raw(&[5]); 256],
            },
            false,
            Some("terminator"),
        ),
    ];
    for (name, x, done, err) in cases {
        let mut e = Enc::new();
        e.raw(&x.cookie).raw(&x.nonce);
        match x.addr {
            None => {
                e.bool(false);
            }
            Some(std::net::SocketAddr::V4(a)) => {
                e.bool(true).bool(false).raw(&a.ip().octets()).u16(a.port());
            }
            Some(std::net::SocketAddr::V6(a)) => {
                e.bool(true).bool(true).raw(&a.ip().octets()).u16(a.port());
            }
        }
        e.slice(x.transport.as_bytes());
        for s in &x.steps {
            match s {
                ExtOrStep::Raw(b) if b.len() == 64 => {
                    e.bool(false).raw(b);
                }
                ExtOrStep::Raw(b) => {
                    e.raw(b);
                }
                ExtOrStep::Forged(sn) => {
                    e.bool(true).raw(sn);
                }
            }
        }
        let bytes = e.finish();
        // Decode it again the way the harness does.
        let mut u = Unstructured::new(&bytes);
        let (cookie, nonce, addr, transport) = ptkit_fuzz::extor_header(&mut u).expect("header");
        assert_eq!(
            (cookie, nonce, addr, transport),
            (x.cookie, x.nonce, x.addr, x.transport),
            "extorport seed {name}"
        );
        let trace = ptkit_fuzz::extorport(&bytes);
        assert_eq!(trace.done, done, "extorport seed {name}: {trace:?}");
        assert!(trace.loopback_done, "extorport seed {name}: {trace:?}");
        match err {
            None => assert_eq!(trace.error, None, "extorport seed {name}"),
            Some(e) => assert!(
                trace.error.as_deref().is_some_and(|m| m.contains(e)),
                "extorport seed {name}: {trace:?}"
            ),
        }
        out.write(&dir, name, &bytes);
    }
    // The server side: cookie, server nonce, then the PT's bytes; `None` = forged client hash.
    let te_road: [u8; 32] = *b"te road There is always another ";
    let frame =
        |c: u16, body: &[u8]| cat(&[&c.to_be_bytes(), &(body.len() as u16).to_be_bytes(), body]);
    let server_cases: Vec<ServerCase> = vec![
        (
            "server-tor-transcript",
            gliding,
            te_road,
            vec![
                Some(vec![1]),
                Some(but.to_vec()),
                Some(hex(
                    "ab391732dd2ed968cd40c087d1b1f25b33b3cd77ff79bd80c2074bbf438119a2",
                )),
                Some(hex("fff0 0003 414243")),
                Some(frame(1, b"1.2.3.4:5678")),
                Some(frame(2, b"rfc1149")),
                Some(frame(0, b"")),
            ],
            true,
            None,
        ),
        (
            "server-bare-useraddr",
            [1; 32],
            [2; 32],
            vec![
                Some(vec![1]),
                Some(vec![3; 32]),
                None,
                Some(frame(1, b"1.2.3.4")),
                Some(frame(0, b"")),
            ],
            true,
            None,
        ),
        (
            "server-useraddr-nul",
            [1; 32],
            [2; 32],
            vec![
                Some(vec![1]),
                Some(vec![3; 32]),
                None,
                Some(frame(1, b"1.2.3.4:5678\0")),
            ],
            false,
            Some("USERADDR"),
        ),
        (
            "server-bad-transport",
            [1; 32],
            [2; 32],
            vec![
                Some(vec![1]),
                Some(vec![3; 32]),
                None,
                Some(frame(2, b"rf*1149")),
            ],
            false,
            Some("TRANSPORT"),
        ),
        (
            "server-wrong-client-hash",
            gliding,
            te_road,
            vec![
                Some(vec![1]),
                Some(but.to_vec()),
                Some(b"not with a bang but a whimper...".to_vec()),
            ],
            false,
            Some("client hash mismatch"),
        ),
        (
            "server-auth-type-99",
            [0; 32],
            [0; 32],
            vec![Some(vec![99])],
            false,
            Some("auth type 99"),
        ),
    ];
    for (name, cookie, nonce, steps, done, err) in server_cases {
        let mut e = Enc::new();
        e.raw(&cookie).raw(&nonce);
        for (i, st) in steps.iter().enumerate() {
            // The third step is the client hash: a bool first (forged or not).
            if i == 2 {
                e.bool(st.is_none());
            }
            if let Some(b) = st {
                e.raw(b);
            }
        }
        let bytes = e.finish();
        let mut trace = ptkit_fuzz::ExtOrTrace::default();
        ptkit_fuzz::extor_server(&bytes, &mut trace);
        assert_eq!(trace.server_done, done, "extorport seed {name}: {trace:?}");
        match err {
            None => assert_eq!(trace.server_error, None, "extorport seed {name}"),
            Some(e) => assert!(
                trace.server_error.as_deref().is_some_and(|m| m.contains(e)),
                "extorport seed {name}: {trace:?}"
            ),
        }
        ptkit_fuzz::extorport(&bytes);
        out.write(&dir, name, &bytes);
    }
    // Raw inputs for parse_cookie and decode_command.
    let cookie = cat(&[
        ptkit_tor::extorport::COOKIE_HEADER,
        b"0123456789ABCDEF0123456789ABCDEF",
    ]);
    ptkit_fuzz::extorport(&cookie);
    out.write(&dir, "cookie-file", &cookie);
    let frames = hex(
        "fff0 0003 414243 0001 000c 312e322e332e343a35363738 0002 0007 72666331313439 0000 0000",
    );
    assert_eq!(ptkit_fuzz::extorport(&frames).frames, 4);
    out.write(&dir, "metadata-frames", &frames);
}

// ---------------------------------------------------------------------------------------------

fn cstring(out: &mut Out) {
    let dir = out.dir("cstring");
    let cases: &[(&str, &[u8], bool)] = &[
        ("plain", b"\"Connected to bridge A\"", true),
        ("quote-backslash", b"\"say \\\"hi\\\" C:\\\\path\"", true),
        ("c-escapes", b"\"line1\\nline2\\r\\ttab\\'\"", true),
        ("octal-3-digit", b"\"\\00123abc caf\\303\\251\"", true),
        ("octal-short", b"\"\\1\\12\\123\"", true),
        (
            "tor-octal",
            b"\"octal: \\042q\\042 bs=\\134 nl=\\012 e=\\303\\251 end\" trailing",
            true,
        ),
        ("hex", b"\"hex=\\x41\\X7e\"", true),
        ("bad-octal-400", b"\"\\400\"", false),
        ("bad-hex", b"\"\\x4\"", false),
        ("bad-escape", b"\"\\?\\a\\8\"", false),
        ("decoded-nul", b"\"\\0\"", false),
        ("unterminated", b"\"abc", false),
    ];
    for (name, input, ok) in cases {
        let r = ptkit_fuzz::cstring(input);
        assert_eq!(r.is_ok(), *ok, "cstring seed {name}: {r:?}");
        out.write(&dir, name, input);
    }
    let all: Vec<u8> = (1..=255u8).collect();
    ptkit_fuzz::cstring(&all).expect_err("raw bytes are not a quoted string");
    out.write(&dir, "all-bytes", &all);
}

// ---------------------------------------------------------------------------------------------

fn proxy_url(out: &mut Out) {
    let dir = out.dir("proxy_url");
    let cases: &[(&str, &str, bool)] = &[
        ("http-path", "http://127.0.0.1:8080/path", true),
        (
            "http-name-creds",
            "http://user:password@localhost:8080",
            true,
        ),
        ("socks5-v4", "socks5://127.0.0.9:1080", true),
        ("socks5-v6", "socks5://[::1]:1080", true),
        ("socks4-arti", "socks4://10.0.0.1:9050", true),
        (
            "socks5-raw-creds",
            "socks5://us;er:p@ss:w/rd@127.0.0.9:1080",
            true,
        ),
        (
            "socks5-pct-creds",
            "socks5://a%40b:c%3Ad@127.0.0.1:1080",
            true,
        ),
        ("http-space-pass", "http://user:pa ss@127.0.0.9:3128", true),
        ("unknown-scheme", "unknown://localhost:9999/whatever", false),
        ("no-port", "http://[::1]", false),
        ("socks5-user-only", "socks5://user@127.0.0.1:1080", false),
    ];
    for (name, input, ok) in cases {
        let r = ptkit_fuzz::proxy_url(input.as_bytes());
        assert_eq!(r.is_ok(), *ok, "proxy_url seed {name}: {r:?}");
        out.write(&dir, name, input.as_bytes());
    }
}
