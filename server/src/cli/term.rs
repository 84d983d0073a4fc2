//! Everything the CLI shows a person goes through here.
//!
//! Much of what the CLI prints was chosen by someone else: an agent's URL or summary, a
//! caller's reason, a principal's name. Printed raw, an ESC sequence could rewrite the
//! approver's terminal and a newline could forge a row of a listing. So every line is
//! escaped as a whole (`domain::text::escape_line`): one `say!` is one line, whatever
//! its arguments contain. JSON is made safe without changing its value (`json_safe`).
//! `println!` and friends are refused in this crate by clippy (server/clippy.toml) so
//! that nothing prints around this module.

use crate::domain::text::{escape_line, json_safe};
use std::fmt;
use std::io::Write;

/// Prints one escaped line on stdout, like `println!`.
macro_rules! say {
    () => { $crate::cli::term::line(format_args!("")) };
    ($($arg:tt)*) => { $crate::cli::term::line(format_args!($($arg)*)) };
}

/// Prints one escaped line on stderr, like `eprintln!`.
macro_rules! tell {
    ($($arg:tt)*) => { $crate::cli::term::err_line(format_args!($($arg)*)) };
}

pub(crate) use {say, tell};

/// One escaped line on stdout. A closed pipe (`arbiter … | head`) is not an error.
pub fn line(args: fmt::Arguments<'_>) {
    let text = escape_line(&args.to_string());
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// One escaped line on stderr.
pub fn err_line(args: fmt::Arguments<'_>) {
    let text = escape_line(&args.to_string());
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// Multi-line text (a Markdown report): each line escaped, the line breaks kept.
pub fn text_block(text: &str) -> String {
    text.split('\n')
        .map(escape_line)
        .collect::<Vec<_>>()
        .join("\n")
}

/// What `write_out` writes, and so how it is made safe.
#[derive(Clone, Copy)]
pub enum Shown {
    /// Text a person reads (a report): every line escaped.
    Text,
    /// JSON (a receipt, a report with --json): the same value, invisible characters escaped.
    Json,
    /// Signed bytes (a checkpoint note): written as they are, or the signature breaks.
    Data,
}

impl Shown {
    pub fn render(self, text: &str) -> String {
        match self {
            Shown::Text => text_block(text),
            Shown::Json => json_safe(text),
            Shown::Data => text.to_owned(),
        }
    }
}

/// Writes already-rendered text to stdout without adding a line break.
pub fn raw(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}
