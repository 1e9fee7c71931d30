//! Why a selector failed to parse, and where: every error carries the byte offset (from 0)
//! of the offending input and reads as `invalid selector at byte 7: expected …, found …`.

use std::fmt;

use super::expr::write_quoted;
use super::parser::MAX_NESTING;

/// A selector that is not valid Calico selector syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector at byte {position}: {kind}")]
pub struct SelectorError {
    /// Byte offset into the selector text, from 0, of the part that is wrong.
    pub position: usize,
    /// What is wrong there.
    pub kind: SelectorErrorKind,
}

impl SelectorError {
    pub(super) fn unexpected(position: usize, expected: Expected, found: Found) -> Self {
        SelectorError {
            position,
            kind: SelectorErrorKind::Unexpected { expected, found },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorErrorKind {
    #[error("expected {expected}, found {found}")]
    Unexpected { expected: Expected, found: Found },
    #[error(
        "the string literal opened with {quote} is never closed (literals have no escapes; \
         quote a value containing {quote} with the other quote kind)"
    )]
    UnterminatedString { quote: char },
    #[error("label is {length} bytes long, but labels are at most 512 bytes")]
    LabelTooLong { length: usize },
    #[error("parentheses are nested more than {MAX_NESTING} deep")]
    NestedTooDeep,
}

/// What the tokenizer or parser was looking for when it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// Any token: the input holds a byte that starts none.
    Token,
    /// `a == …`, `has(…)`, `all()`, `global()`, `!` or `(`.
    Term,
    /// An operator after the label `label`.
    OperatorAfter { label: Box<str> },
    /// The two-word operator (`starts with`, `ends with`, `not in`) ran into a label
    /// character: `a not in x`.
    WordBoundaryAfter(&'static str),
    /// The doubled form of a punctuation byte that is invalid alone (`=`, `&`, `|`).
    Doubled(char),
    /// A string literal as the right-hand side of an operator.
    StringAfter(&'static str),
    /// `{` after `in` / `not in`.
    SetAfter(&'static str),
    /// Inside a set, after `{` or `,`.
    SetItemOrClose,
    /// Inside a set, after an item.
    CommaOrClose,
    /// A label inside `has(`.
    HasLabel,
    /// The `)` closing a built-in such as `has(`, `all(` or `global(`.
    BuiltinClose(&'static str),
    /// `&&`, `||` or the `)` closing the `(` at byte `open`.
    CloseParen { open: usize },
    /// `&&`, `||` or the end of the input after a complete expression.
    End,
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expected::Token => f.write_str(
                "a label, a quoted string, one of ( ) { } , or an operator (== != ! && ||)",
            ),
            Expected::Term => f.write_str(
                "a label comparison, has(label), all(), global(), '!' or '(' (an empty \
                 selector is written all())",
            ),
            Expected::OperatorAfter { label } => write!(
                f,
                "an operator after label '{label}' (==, !=, in, not in, contains, starts with, \
                 ends with; operators are lowercase)"
            ),
            Expected::WordBoundaryAfter(operator) => {
                write!(f, "a space or punctuation after '{operator}'")
            }
            Expected::Doubled(c) => write!(f, "'{c}{c}'"),
            Expected::StringAfter(operator) => write!(f, "a string literal after '{operator}'"),
            Expected::SetAfter(operator) => {
                write!(f, "a set such as {{\"a\", \"b\"}} after '{operator}'")
            }
            Expected::SetItemOrClose => f.write_str("a string literal or '}' in a set"),
            Expected::CommaOrClose => f.write_str("',' or '}' after a set item"),
            Expected::HasLabel => f.write_str("a label inside 'has('"),
            Expected::BuiltinClose(builtin) => write!(f, "')' to close '{builtin}'"),
            Expected::CloseParen { open } => {
                write!(f, "'&&', '||' or ')' to close the '(' at byte {open}")
            }
            Expected::End => f.write_str("'&&', '||' or the end of the selector"),
        }
    }
}

/// Display length limit for labels and literals echoed back in a message.
const ECHO_LIMIT: usize = 64;

/// What was there instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    EndOfInput,
    /// A character that starts no token (newline, `%`, non-ASCII, …).
    Char(char),
    /// A `=`, `&` or `|` not followed by a second one.
    Lone(char),
    /// A run of label characters where no label is allowed (after a label, only an
    /// operator word may follow).
    Word(Box<str>),
    Label(Box<str>),
    StringLiteral(Box<str>),
    Has(Box<str>),
    /// Punctuation, an operator or `all()` / `global()`, as written in canonical text.
    Symbol(&'static str),
}

impl Found {
    /// Builds a `Found` that echoes `text`, shortened so that a 10 kB literal does not end
    /// up in a log line.
    pub(super) fn echo(text: &str) -> Box<str> {
        if text.len() <= ECHO_LIMIT {
            return text.into();
        }
        let mut end = ECHO_LIMIT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &text[..end]).into_boxed_str()
    }
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::EndOfInput => f.write_str("the end of the selector"),
            Found::Char('\n') => f.write_str("a newline (selectors are one line)"),
            Found::Char('\r') => f.write_str("a carriage return (selectors are one line)"),
            Found::Char(c) if c.is_control() => {
                write!(f, "control character U+{:04X}", u32::from(*c))
            }
            Found::Char(c) if !c.is_ascii() => {
                write!(f, "non-ASCII character '{c}' (U+{:04X})", u32::from(*c))
            }
            Found::Char(c) => write!(f, "'{c}'"),
            Found::Lone(c) => write!(f, "a lone '{c}'"),
            Found::Word(word) => write!(f, "'{word}'"),
            Found::Label(label) => write!(f, "label '{label}'"),
            Found::StringLiteral(value) => {
                f.write_str("string literal ")?;
                write_quoted(f, value)
            }
            Found::Has(label) => write!(f, "'has({label})'"),
            Found::Symbol(symbol) => write!(f, "'{symbol}'"),
        }
    }
}
