//! `snowflake-broker`: a drop-in for the Go Snowflake broker (same flags and endpoints).

/// Runs `snowflake-broker` with the Go program's flags (`argv` without the program name) and
/// returns the exit code.
pub async fn main(argv: Vec<String>) -> i32 {
    let _ = argv;
    eprintln!("snowflake-broker: not built yet");
    1
}
