//! The only place YAML is parsed. The loader ([`super::load`]) reads each file, size-checked and
//! UTF-8-checked; it is parsed here with serde-saphyr's budget (which stops alias bombs), and
//! every error names the file, line, column and field path.

use super::error::{SpecError, position_of};
use serde::de::DeserializeOwned;
use std::path::Path;

/// The largest YAML file stackctl reads; desired state is small, and a huge file is a mistake.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The most YAML nodes (scalars, maps, lists) one file may expand to, aliases included.
pub const MAX_NODES: usize = 20_000;

/// Returns whether `text` holds no YAML value at all: nothing, only comments, or a bare `---`.
pub fn is_empty_document(text: &str) -> bool {
    matches!(
        parse::<Option<serde::de::IgnoredAny>>(text, Path::new("")),
        Ok(None)
    )
}

std::thread_local! {
    /// The text [`parse`] is reading, for [`source_text`].
    static SOURCE: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Returns the text of the file being parsed at `at`: a scalar's own spelling where YAML
/// typed it (`8.0`, `0x1F`, `yes`). Only during [`parse`], on its thread.
pub fn source_text(at: &serde_saphyr::Location) -> Option<String> {
    let span = at.span();
    let (start, len) = (span.byte_offset()?, span.byte_len()?);
    let start = usize::try_from(start).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    SOURCE.with(|source| {
        source
            .borrow()
            .as_deref()
            .and_then(|text| text.get(start..end))
            .map(str::to_owned)
    })
}

/// Parses YAML text into `T`, turning parser and type errors into a [`SpecError`].
pub fn parse<T: DeserializeOwned>(text: &str, shown: &Path) -> Result<T, SpecError> {
    SOURCE.with(|source| *source.borrow_mut() = Some(text.to_owned()));
    let result = parse_text(text, shown);
    SOURCE.with(|source| *source.borrow_mut() = None);
    result
}

/// [`parse`], without keeping the text for [`source_text`].
fn parse_text<T: DeserializeOwned>(text: &str, shown: &Path) -> Result<T, SpecError> {
    let mut field = String::new();
    let mut options = serde_saphyr::options::Options::default();
    options.with_snippet = false;
    // An environment value's text is read back from the file whatever YAML types it as,
    // `.inf` and `.nan` included.
    options.non_finite_float_policy = serde_saphyr::options::NonFiniteFloatPolicy::PassThrough;
    // Desired-state files are small: a tight node budget stops alias bombs in milliseconds.
    let mut budget = options.budget.take().unwrap_or_default();
    budget.max_nodes = MAX_NODES;
    budget.max_aliases = MAX_NODES / 10;
    options.budget = Some(budget);
    let result = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            field = e.path().to_string();
            e.into_inner()
        })
    });
    result.map_err(|e| {
        let message = humanize(&e.without_snippet().to_string());
        // A `Spanned` value adds a `.value` step that is no part of the file's structure.
        // Spanned blocks (`health`, its `http` and `tcp`, `endpoint_env` entries) add one
        // inside the path, too.
        let field = field.replace(".value.", ".");
        let field = field.strip_suffix(".value").unwrap_or(&field).to_owned();
        let field = (!field.is_empty() && field != "." && !field.contains('?')).then_some(field);
        SpecError {
            file: shown.into(),
            position: e.location().and_then(position_of),
            field,
            message,
        }
    })
}

/// Rewrites parser messages for people writing desired state: drops the trailing position
/// (shown in front instead) and library advice, and names the expected type plainly.
fn humanize(message: &str) -> String {
    let mut message = message.to_owned();
    // saphyr appends " at line L, column C"; only that exact tail is cut.
    if let Some(cut) = message.rfind(" at line ") {
        let tail = &message[cut + " at line ".len()..];
        let is_position = tail.split_once(", column ").is_some_and(|(l, c)| {
            l.chars().all(|ch| ch.is_ascii_digit()) && c.chars().all(|ch| ch.is_ascii_digit())
        });
        if is_position {
            message.truncate(cut);
        }
    }
    for advice in [
        ", set DuplicateKeyPolicy",
        "; set DuplicateKeyPolicy",
        " (use from_str_multiple",
        "; use from_str_multiple",
        ", use from_str_multiple",
    ] {
        if let Some(cut) = message.find(advice) {
            message.truncate(cut);
        }
    }
    let plain = [
        ("invalid i64", "expected an integer"),
        ("invalid u32", "expected a non-negative integer"),
        (
            "expected mapping start",
            "expected a mapping of `key: value` lines",
        ),
        ("expected sequence start", "expected a list"),
        ("invalid boolean", "expected `true` or `false`"),
    ];
    for (raw, better) in plain {
        if message == raw {
            return better.to_owned();
        }
    }
    if let Some(rest) = message.strip_prefix("invalid type: unit value, ") {
        return format!("no value given, {rest}");
    }
    // Text settings are read as strings, so that `8.0` or `yes` stays as written.
    if message.starts_with("cannot deserialize null into string") {
        return "no value given; write one, or \"\" for an empty text".into();
    }
    if message == "expected string scalar" {
        return "expected a single value (text, a number or true/false), not a list or mapping"
            .into();
    }
    if message == "cannot deserialize tagged scalar into string" {
        return "a tagged value (`!!int`, `!!float`, `!!bool`) cannot be used here; write the \
                value as text"
            .into();
    }
    // A scalar tagged `!!int`, `!!float` or `!!bool` whose text is not one (`!!int 0022`).
    if ["invalid u64", "invalid i64", "invalid f64", "invalid bool"]
        .iter()
        .any(|m| message.starts_with(m))
    {
        return "a tagged value (`!!int`, `!!float`, `!!bool`) whose text is no such value; \
                write the value as text, without the tag"
            .into();
    }
    if message.starts_with("budget breached") {
        return format!(
            "the file expands to more than {MAX_NODES} YAML nodes (an alias bomb?); desired-state files are far smaller"
        );
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn messages_keep_their_text_and_lose_only_the_position_tail() {
        assert_eq!(
            humanize("invalid i64 at line 3, column 5"),
            "expected an integer"
        );
        assert_eq!(
            humanize("unknown anchor (defined at line 1, column 2) (used at line 3, column 4)"),
            "unknown anchor (defined at line 1, column 2) (used at line 3, column 4)"
        );
    }

    #[test]
    fn alias_bombs_stop_at_the_node_budget() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let p = i - 1;
            text.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
        }
        // 10^8 nodes if expanded: the error proves the budget stopped it.
        let error = parse::<serde::de::IgnoredAny>(&text, Path::new("bomb.yaml")).unwrap_err();
        assert!(error.message.contains("alias bomb"), "{error}");
    }
}
