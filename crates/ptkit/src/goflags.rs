//! Go's `flag` syntax for the drop-in programs (`snowflake-server`, `snowflake-broker`):
//! `-name` and `--name` are the same flag, values follow `=` or the next argument, and
//! boolean flags take an optional `=true`/`=false`.

/// Rewrites Go-style arguments into clap's: every `-name` becomes `--name`, and
/// `--flag=true|false` of a boolean flag in `bools` becomes `--flag` or nothing. Arguments
/// after `--`, and values that follow a non-boolean flag, pass unchanged.
pub fn normalize(argv: &[String], bools: &[&str]) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len());
    let mut iter = argv.iter();
    let mut value_next = false;
    while let Some(arg) = iter.next() {
        if value_next {
            out.push(arg.clone());
            value_next = false;
            continue;
        }
        if arg == "--" {
            out.push(arg.clone());
            out.extend(iter.cloned());
            break;
        }
        let body = if let Some(b) = arg.strip_prefix("--") {
            b
        } else if let Some(b) = arg.strip_prefix('-').filter(|b| !b.is_empty()) {
            b
        } else {
            out.push(arg.clone());
            continue;
        };
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        if bools.contains(&name) {
            match value.map(str::to_ascii_lowercase).as_deref() {
                None | Some("true" | "1" | "t") => out.push(format!("--{name}")),
                Some("false" | "0" | "f") => {}
                Some(_) => out.push(format!("--{body}")),
            }
            continue;
        }
        out.push(format!("--{body}"));
        // `-name value`: the next argument is the value unless given with `=`.
        value_next = value.is_none() && !matches!(name, "h" | "help" | "version");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(args: &[&str]) -> Vec<String> {
        let v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        normalize(&v, &["disable-tls", "unsafe-logging"])
    }

    #[test]
    fn single_and_double_dash_forms() {
        assert_eq!(
            n(&[
                "-acme-hostnames",
                "a.example",
                "--acme-email=x@y",
                "-disable-tls"
            ]),
            [
                "--acme-hostnames",
                "a.example",
                "--acme-email=x@y",
                "--disable-tls"
            ]
        );
        assert_eq!(
            n(&["-disable-tls=false", "-unsafe-logging=true"]),
            ["--unsafe-logging"]
        );
        assert_eq!(
            n(&["-log", "-weird-file-name"]),
            ["--log", "-weird-file-name"]
        );
        assert_eq!(n(&["-version"]), ["--version"]);
        assert_eq!(n(&["--", "-x"]), ["--", "-x"]);
        assert_eq!(n(&["-disable-tls=maybe"]), ["--disable-tls=maybe"]);
    }
}
