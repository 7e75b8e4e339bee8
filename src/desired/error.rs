//! Errors in the files of a repo: each names the file, and where known the line, column and field.

use serde_saphyr::Location;
use std::fmt;
use std::path::PathBuf;

/// One problem in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The file, relative to the repo root.
    pub file: PathBuf,
    /// 1-based line and column, where the parser knows them.
    pub position: Option<(u64, u64)>,
    /// Dotted field path such as `services.llm.replicas`, where known.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl SpecError {
    /// Returns an error about a whole file.
    pub fn file(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        SpecError {
            file: file.into(),
            position: None,
            field: None,
            message: message.into(),
        }
    }

    /// Returns an error about one field at a known location.
    pub fn at(
        file: impl Into<PathBuf>,
        location: Location,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        SpecError {
            file: file.into(),
            position: position_of(location),
            field: Some(field.into()),
            message: message.into(),
        }
    }
}

/// Returns the 1-based (line, column) of a parser location, if it is known.
pub fn position_of(location: Location) -> Option<(u64, u64)> {
    (location != Location::UNKNOWN && location.line() > 0)
        .then(|| (location.line(), location.column()))
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for SpecError {}

/// Every problem found while loading a repo; loading fails if there is at least one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}
