//! `snowflake-server`: a drop-in for the Go Snowflake server (same flags, same managed mode).

/// Runs `snowflake-server` with the Go program's flags (`argv` without the program name) and
/// returns the exit code.
pub async fn main(argv: Vec<String>) -> i32 {
    let _ = argv;
    eprintln!("snowflake-server: not built yet");
    1
}
