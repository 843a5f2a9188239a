//! The one error of loading: a scenario file that cannot be used, with the position of the
//! mistake and what to do about it.

use marked_yaml::Span;

/// A scenario file that could not be loaded, with where and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ScenarioError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl ScenarioError {
    /// An error at the start of `span` (0:0 where the parser gave no position).
    pub(crate) fn at(file: &str, span: &Span, message: String) -> Self {
        let (line, column) = span.start().map_or((0, 0), |m| (m.line(), m.column()));
        ScenarioError {
            file: file.to_string(),
            line,
            column,
            message,
        }
    }
}
