//! Pure renderers: plans for people and machines, status tables, endpoint files and batch
//! scripts. Each returns text; printing is the command layer's job.

pub mod endpoints;
pub mod plan_json;
pub mod plan_markdown;
pub mod plan_text;
pub mod results;
pub mod script;
pub mod status;

/// Whether output is coloured. Every renderer reads the same without colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// Emit ANSI colour codes.
    pub color: bool,
}

impl Style {
    /// No colour: for pipes, files, CI logs and tests.
    pub const PLAIN: Style = Style { color: false };

    /// Colours a change symbol: green for `+`, red for `-`, yellow for `~` and `-/+`.
    pub fn paint(self, symbol: &str) -> String {
        self.paint_symbol(symbol, symbol)
    }

    /// Colours `text` in the colour of `symbol`.
    pub fn paint_symbol(self, text: &str, symbol: &str) -> String {
        if !self.color {
            return text.to_owned();
        }
        let code = match symbol {
            "+" => "32",
            "-" => "31",
            _ => "33",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }

    /// Dims secondary text such as comments and job ids.
    pub fn dim(self, text: &str) -> String {
        if self.color && !text.is_empty() {
            format!("\x1b[2m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}

/// Lays out `rows` under `header` in left-aligned columns two spaces apart, one line each,
/// without trailing blanks.
pub fn table<const N: usize>(header: &[&str; N], rows: Vec<[String; N]>) -> String {
    use std::fmt::Write;
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(header.map(String::from)).chain(rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}
