//! Splits the text of a YAML manifest file into its documents and parses each into a
//! [`Resource`], keeping the line every document starts on, so that a problem can be
//! reported as `file:line` and the file's other documents still load.

use std::hash::{BuildHasher as _, RandomState};
use std::sync::OnceLock;

use crate::model::resources::{Resource, ResourceError};

/// One document of a manifest file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document<'a> {
    /// The 1-based line of the document's first line of content (not a comment), the line
    /// a problem with the document as a whole is reported at.
    pub line: usize,
    /// The 1-based line `text` starts on.
    first_line: usize,
    text: &'a str,
}

/// Why a document is not an object fedwall can use; each message ends with the fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// serde_yaml's message, whose positions are lines of the file (not of the document).
    #[error(
        "this document is not valid YAML: {0}; fix the YAML, and separate documents with \
         a line holding only `---`"
    )]
    Syntax(String),
    #[error("{}; {}", .0, resource_fix(.0))]
    Resource(ResourceError),
}

fn resource_fix(error: &ResourceError) -> &'static str {
    match error {
        ResourceError::MissingTypeMeta => {
            "every document must be one object with apiVersion and kind (for example \
             `apiVersion: v1` and `kind: Pod`)"
        }
        ResourceError::UnknownKind { .. } => {
            "fix apiVersion and kind, or move this document out of the directory"
        }
        ResourceError::Shape { .. } => {
            "fix that field (field names and types follow the Kubernetes and Calico APIs)"
        }
        ResourceError::MissingName { .. } => "add metadata.name",
    }
}

/// Cuts `text` into documents at lines that start with `---` (a document start marker, which
/// YAML forbids inside content at column 0) and after lines holding only `...` (a document
/// end marker). Documents holding nothing but blank lines, comments and directives are
/// left out. The result borrows from `text`.
pub fn split_documents(text: &str) -> Vec<Document<'_>> {
    // A byte order mark is not content; serde_yaml would accept it, but it would shift the
    // first line's columns and is easier to drop here.
    let body_start = if text.starts_with('\u{feff}') { 3 } else { 0 };
    let mut documents = Vec::new();
    let mut current = PendingDocument::starting_at(body_start, 1);
    let mut offset = body_start;
    for (index, raw_line) in text[body_start..].split_inclusive('\n').enumerate() {
        let line_number = index + 1;
        let line = raw_line.trim_end_matches(['\n', '\r']);
        let next_offset = offset + raw_line.len();
        if let Some(rest) = line.strip_prefix("---").filter(|rest| is_marker_rest(rest)) {
            current.finish(text, offset, &mut documents);
            // Content may follow the marker on its own line (`--- |`, `--- !tag`).
            current = PendingDocument::starting_at(offset + 3, line_number);
            current.see(rest, line_number);
        } else if line.strip_prefix("...").is_some_and(is_marker_rest) {
            current.finish(text, offset, &mut documents);
            current = PendingDocument::starting_at(next_offset, line_number + 1);
        } else {
            current.see(line, line_number);
        }
        offset = next_offset;
    }
    current.finish(text, text.len(), &mut documents);
    documents
}

/// What may follow `---` or `...` on a marker line: nothing, or whitespace then anything.
fn is_marker_rest(rest: &str) -> bool {
    rest.is_empty() || rest.starts_with([' ', '\t'])
}

/// A document whose end has not been found yet.
struct PendingDocument {
    start: usize,
    first_line: usize,
    content_line: Option<usize>,
}

impl PendingDocument {
    fn starting_at(start: usize, first_line: usize) -> PendingDocument {
        PendingDocument {
            start,
            first_line,
            content_line: None,
        }
    }

    /// Notes the first line that holds content: not blank, not a comment, not a directive.
    fn see(&mut self, line: &str, line_number: usize) {
        let trimmed = line.trim_start();
        let is_content = !(trimmed.is_empty() || trimmed.starts_with('#') || line.starts_with('%'));
        if is_content && self.content_line.is_none() {
            self.content_line = Some(line_number);
        }
    }

    fn finish<'a>(&self, text: &'a str, end: usize, documents: &mut Vec<Document<'a>>) {
        if let Some(line) = self.content_line {
            documents.push(Document {
                line,
                first_line: self.first_line,
                text: &text[self.start..end],
            });
        }
    }
}

/// What a document's text digests to. Equal texts declare equal objects, so an object whose
/// document kept its digest need not be parsed or sent again. SipHash under a key drawn once
/// per process: a manifest's author cannot make two documents collide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digest(u64);

impl Document<'_> {
    pub fn digest(&self) -> Digest {
        static KEY: OnceLock<RandomState> = OnceLock::new();
        Digest(KEY.get_or_init(RandomState::new).hash_one(self.text))
    }

    /// Parses the document into the resource it declares.
    pub fn parse(&self) -> Result<Resource, DocumentError> {
        if let Some(resource) = Resource::from_yaml_text(self.text) {
            return Ok(resource);
        }
        let value = match serde_yaml::from_str::<serde_yaml::Value>(self.text) {
            Ok(value) => value,
            Err(_) => return Err(DocumentError::Syntax(self.located_syntax_error())),
        };
        match Resource::from_yaml(value) {
            Err(ResourceError::Shape { kind, message }) => {
                // Deserializing from the text again gives the field path and line that
                // deserializing from a parsed value loses.
                let message = Resource::deserialize_kind(
                    kind,
                    serde_yaml::Deserializer::from_str(&self.padded_text()),
                )
                .err()
                .map_or(message, |error| error.to_string());
                Err(DocumentError::Resource(ResourceError::Shape {
                    kind,
                    message,
                }))
            }
            other => other.map_err(DocumentError::Resource),
        }
    }

    fn located_syntax_error(&self) -> String {
        match serde_yaml::from_str::<serde_yaml::Value>(&self.padded_text()) {
            Err(error) => error.to_string(),
            Ok(_) => "the document does not parse on its own".to_owned(),
        }
    }

    /// The document's text preceded by as many empty lines as precede it in its file, so
    /// that serde_yaml's messages name lines of the file. Only built when reporting an
    /// error: padding every document of a large file would make reading it quadratic.
    fn padded_text(&self) -> String {
        let mut padded = "\n".repeat(self.first_line - 1);
        padded.push_str(self.text);
        padded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::resources::Kind;

    fn lines_and_kinds(text: &str) -> Vec<(usize, Result<Kind, String>)> {
        split_documents(text)
            .iter()
            .map(|doc| {
                let parsed = doc.parse().map(|r| r.kind()).map_err(|e| e.to_string());
                (doc.line, parsed)
            })
            .collect()
    }

    #[test]
    fn splits_on_marker_lines_and_keeps_file_lines() {
        let text = "# leading comment\n\
                    apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n\
                    ---\n\
                    \n# only a comment\n\
                    --- # a comment after the marker\n\
                    apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n\
                    ...\n\
                    apiVersion: v1\nkind: Namespace\nmetadata: {name: c}\n";
        let docs = lines_and_kinds(text);
        assert_eq!(
            docs,
            vec![
                (2, Ok(Kind::Namespace)),
                (10, Ok(Kind::Namespace)),
                (14, Ok(Kind::Namespace)),
            ]
        );
    }

    #[test]
    fn a_marker_needs_whitespace_or_the_end_of_the_line_after_it() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: \"a\n----\"\n";
        assert_eq!(split_documents(text).len(), 1);
    }

    #[test]
    fn crlf_and_byte_order_mark_are_accepted() {
        let text = "\u{feff}apiVersion: v1\r\nkind: Namespace\r\nmetadata:\r\n  name: a\r\n---\r\n\
                    apiVersion: v1\r\nkind: Namespace\r\nmetadata:\r\n  name: b\r\n";
        assert_eq!(
            lines_and_kinds(text),
            vec![(1, Ok(Kind::Namespace)), (6, Ok(Kind::Namespace))]
        );
    }

    #[test]
    fn syntax_errors_name_lines_of_the_file() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n\
                    apiVersion: v1\nkind: Pod\nmetadata: {name: [b\nspec: {}\n";
        let docs = split_documents(text);
        let error = docs[1].parse().expect_err("unterminated flow sequence");
        assert!(
            matches!(error, DocumentError::Syntax(_)),
            "expected a syntax error, got {error}"
        );
        let message = error.to_string();
        assert!(message.contains("at line 8"), "{message}");
        assert!(
            message.contains("while parsing a flow sequence at line 7"),
            "{message}"
        );
    }

    #[test]
    fn shape_errors_name_the_field_and_the_line_of_the_file() {
        let text = "# pods\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  \
                    containers:\n  - name: web\n    ports:\n    - containerPort: http\n";
        let docs = split_documents(text);
        let message = docs[0].parse().expect_err("a string port").to_string();
        assert!(
            message.contains("spec.containers[0].ports[0].containerPort"),
            "{message}"
        );
        assert!(message.contains("at line 11"), "{message}");
        assert!(
            message.ends_with("follow the Kubernetes and Calico APIs)"),
            "{message}"
        );
    }

    #[test]
    fn every_resource_error_says_how_to_fix_it() {
        let cases = [
            ("- a list\n", "apiVersion and kind"),
            (
                "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n",
                "move this document",
            ),
            (
                "apiVersion: v1\nkind: Pod\nmetadata: {}\n",
                "add metadata.name",
            ),
        ];
        for (text, fix) in cases {
            let message = split_documents(text)[0]
                .parse()
                .expect_err(text)
                .to_string();
            assert!(message.contains(fix), "{text:?}: {message}");
        }
    }
}
