//! Templates: handlebars in strict mode with two registries — HTML-escaping for the html
//! part, plain for the text part and the subject.
//!
//! OWNER: render/message helper. API is fixed; implementation pending.

use std::collections::BTreeSet;
use std::path::Path;

/// A recipient row as templates see it: column names and this row's values, same length.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    /// Header names of the list file this row came from.
    pub columns: &'a [String],
    /// The row's values, in column order (missing trailing cells may be absent).
    pub values: &'a [String],
}

/// The rendered parts of one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    /// Rendered subject (may still contain CR/LF: `message` sanitises it).
    pub subject: String,
    /// Rendered text part, if the campaign has one.
    pub text: Option<String>,
    /// Rendered HTML part, if the campaign has one.
    pub html: Option<String>,
}

/// A template could not be compiled (config error, before anything is sent).
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct TemplateError {
    /// The template file (or `subject`).
    pub file: String,
    /// What handlebars said, with line/column when it has them.
    pub message: String,
}

/// One row could not be rendered (reported and skipped, not fatal).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RowError(pub String);

/// The campaign's compiled templates.
pub struct Templates {}

impl Templates {
    /// Compiles the subject template and the text/html template sources.
    /// `text`/`html` are (path for error messages, source).
    pub fn compile(
        subject: &str,
        text: Option<(&Path, &str)>,
        html: Option<(&Path, &str)>,
    ) -> Result<Self, TemplateError> {
        let _ = (subject, text, html);
        todo!()
    }

    /// Every top-level variable name the templates refer to (to check against list headers).
    pub fn referenced_fields(&self) -> BTreeSet<String> {
        todo!()
    }

    /// Renders all parts for one row. A referenced field that is missing or empty in this
    /// row (outside `{{#if}}`) is a [`RowError`].
    pub fn render(&self, row: Row<'_>) -> Result<Rendered, RowError> {
        let _ = row;
        todo!()
    }
}
