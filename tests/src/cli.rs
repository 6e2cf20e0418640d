//! The `tablecrypt` CLI as a user runs it: the real binary as a child process, with no terminal on stdin, its
//! exit code, stdout (parsed when JSON) and stderr.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::process::cli_binary;

/// One finished run of the CLI.
#[derive(Debug)]
pub struct CliRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliRun {
    /// stdout as JSON (`-o json` prints one document).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// Panics with the whole run unless the exit code is `code`.
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(self.code, code, "exit code: {self:#?}");
        self
    }
}

/// A command line against the server at `server` (e.g. "http://127.0.0.1:5000").
pub fn command(server: &str, args: &[&str]) -> Command {
    let mut command = Command::new(cli_binary());
    // Only what the test gives: nothing inherited from the test's environment.
    for (key, _) in std::env::vars() {
        if key.starts_with("TABLECRYPT_") {
            command.env_remove(key);
        }
    }
    command
        .arg("--server")
        .arg(server)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs `tablecrypt --server <server> <args…>` to the end (at most 120 s).
pub async fn run(server: &str, args: &[&str]) -> CliRun {
    finish(command(server, args)).await
}

/// Runs a prepared command to the end (at most 120 s).
pub async fn finish(mut command: Command) -> CliRun {
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the CLI finished within 120 s")
        .expect("the CLI ran");
    CliRun {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
