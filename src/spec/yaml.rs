//! The only place YAML is parsed. Files are size-checked, UTF-8-checked and parsed with
//! serde-saphyr's budget (which stops alias bombs), and every error names the file, line,
//! column and field path.

use super::error::{SpecError, position_of};
use serde::de::DeserializeOwned;
use std::path::Path;

/// The largest YAML file stackctl reads; desired state is small, and a huge file is a mistake.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Reads and parses one YAML file. `shown` is the path printed in errors (relative to the repo).
pub fn read_file<T: DeserializeOwned>(path: &Path, shown: &Path) -> Result<T, SpecError> {
    let text = read_text(path, shown)?;
    parse(&text, shown)
}

/// Reads a file as UTF-8 text, refusing files over [`MAX_FILE_BYTES`].
fn read_text(path: &Path, shown: &Path) -> Result<String, SpecError> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .map_err(|e| SpecError::file(shown, format!("cannot read: {e}")))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| SpecError::file(shown, format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(SpecError::file(
            shown,
            format!(
                "file is larger than the {} KiB limit",
                MAX_FILE_BYTES / 1024
            ),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
        let column = valid.iter().rev().take_while(|&&b| b != b'\n').count() as u64 + 1;
        SpecError {
            file: shown.into(),
            position: Some((line, column)),
            field: None,
            message: "file is not valid UTF-8".into(),
        }
    })
}

/// Parses YAML text into `T`, turning parser and type errors into a [`SpecError`].
pub fn parse<T: DeserializeOwned>(text: &str, shown: &Path) -> Result<T, SpecError> {
    let mut field = String::new();
    let mut options = serde_saphyr::options::Options::default();
    options.with_snippet = false;
    let result = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            field = e.path().to_string();
            e.into_inner()
        })
    });
    result.map_err(|e| {
        let mut message = e.without_snippet().to_string();
        // saphyr appends " at line L, column C"; the position is shown in front instead.
        if let Some(cut) = message.rfind(" at line ") {
            message.truncate(cut);
        }
        let field = (!field.is_empty() && field != "." && !field.contains('?')).then_some(field);
        SpecError {
            file: shown.into(),
            position: e.location().and_then(position_of),
            field,
            message,
        }
    })
}
