//! Where answers go: tables for people, one JSON document on stdout for scripts. Progress and prompts go to
//! stderr, so `-o json` output can be piped straight into jq.

use std::io::Write as _;

use comfy_table::{ContentArrangement, Table, presets};

use crate::args::Format;

#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub format: Format,
}

impl Printer {
    pub fn is_json(&self) -> bool {
        self.format == Format::Json
    }

    /// `-o wide`: keys by their full ARNs too.
    pub fn is_wide(&self) -> bool {
        self.format == Format::Wide
    }

    pub fn json(&self, value: &serde_json::Value) {
        write_line(&serde_json::to_string_pretty(value).expect("a JSON value serializes"));
    }
}

/// A borderless table in the style of kubectl: upper-case headers, columns padded apart.
pub fn table(headers: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(headers.iter().map(|h| h.to_uppercase()));
    table
}

/// Prints a table flush left, without the padding comfy-table leaves at the line ends.
pub fn print_table(table: &Table) {
    for line in table.to_string().lines() {
        let line = line.strip_prefix(' ').unwrap_or(line);
        write_line(line.trim_end());
    }
}

/// One line on stdout. A reader that went away (`tablecrypt … | head`, `| grep -q`) ends the program quietly
/// with success, as other command-line tools do, instead of a panic.
pub fn write_line(line: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(error) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {error}");
        std::process::exit(1);
    }
}

/// `println!` through [`write_line`].
#[macro_export]
macro_rules! outln {
    () => {
        $crate::output::write_line("")
    };
    ($($arg:tt)*) => {
        $crate::output::write_line(&format!($($arg)*))
    };
}
