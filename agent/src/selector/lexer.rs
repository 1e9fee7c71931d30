//! The selector tokenizer (SELECTORS.md §1). It works on bytes and is context-sensitive
//! in exactly one way, as Calico's is: after a label it looks for an operator word, and
//! anywhere else for a built-in or a label.

use super::error::{Expected, Found, SelectorError, SelectorErrorKind};

/// The longest label, in bytes, that Calico accepts.
pub(super) const MAX_LABEL_LEN: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TokenKind<'a> {
    Label(&'a str),
    /// The content of a string literal, quotes removed.
    Str(&'a str),
    /// `has(label)`, recognised whole by the tokenizer.
    Has(&'a str),
    All,
    Global,
    LParen,
    RParen,
    LBrace,
    RBrace,
    Comma,
    Eq,
    Ne,
    Not,
    And,
    Or,
    In,
    NotIn,
    Contains,
    StartsWith,
    EndsWith,
    Eof,
}

impl TokenKind<'_> {
    /// How a parse error describes this token.
    pub(super) fn found(&self) -> Found {
        match *self {
            TokenKind::Label(label) => Found::Label(Found::echo(label)),
            TokenKind::Str(value) => Found::StringLiteral(Found::echo(value)),
            TokenKind::Has(label) => Found::Has(Found::echo(label)),
            TokenKind::Eof => Found::EndOfInput,
            _ => Found::Symbol(self.symbol()),
        }
    }

    /// The canonical spelling of an operator or punctuation token.
    pub(super) fn symbol(&self) -> &'static str {
        match self {
            TokenKind::All => "all()",
            TokenKind::Global => "global()",
            TokenKind::LParen => "(",
            TokenKind::RParen => ")",
            TokenKind::LBrace => "{",
            TokenKind::RBrace => "}",
            TokenKind::Comma => ",",
            TokenKind::Eq => "==",
            TokenKind::Ne => "!=",
            TokenKind::Not => "!",
            TokenKind::And => "&&",
            TokenKind::Or => "||",
            TokenKind::In => "in",
            TokenKind::NotIn => "not in",
            TokenKind::Contains => "contains",
            TokenKind::StartsWith => "starts with",
            TokenKind::EndsWith => "ends with",
            TokenKind::Label(_) => "label",
            TokenKind::Str(_) => "string literal",
            TokenKind::Has(_) => "has(…)",
            TokenKind::Eof => "end of input",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Token<'a> {
    pub kind: TokenKind<'a>,
    /// Byte offset of the token's first byte.
    pub start: usize,
}

pub(super) fn is_label_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'/' | b'-')
}

fn is_space(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

/// Operator words after a label, tried in this order as Calico does. Each is a sequence
/// of words separated by optional whitespace.
const WORD_OPERATORS: [(&[&str], TokenKind<'static>); 5] = [
    (&["contains"], TokenKind::Contains),
    (&["starts", "with"], TokenKind::StartsWith),
    (&["ends", "with"], TokenKind::EndsWith),
    (&["not", "in"], TokenKind::NotIn),
    (&["in"], TokenKind::In),
];

/// Splits `text` into tokens, ending with `Eof`. The whole input is tokenized before
/// parsing starts, as Calico does, so a lexical error is reported even when a syntax
/// error comes earlier.
pub(super) fn tokenize(text: &str) -> Result<Vec<Token<'_>>, SelectorError> {
    let mut lexer = Lexer {
        text,
        bytes: text.as_bytes(),
        pos: 0,
    };
    let mut tokens = Vec::new();
    loop {
        lexer.skip_space();
        let start = lexer.pos;
        let previous_is_label = matches!(
            tokens.last(),
            Some(Token {
                kind: TokenKind::Label(_),
                ..
            })
        );
        let kind = lexer.next_token(previous_is_label)?;
        tokens.push(Token { kind, start });
        if kind == TokenKind::Eof {
            return Ok(tokens);
        }
    }
}

struct Lexer<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn skip_space(&mut self) {
        while self.bytes.get(self.pos).copied().is_some_and(is_space) {
            self.pos += 1;
        }
    }

    fn rest(&self) -> &'a [u8] {
        &self.bytes[self.pos..]
    }

    /// What stands at `pos`, for an error message.
    fn found_at(&self, pos: usize) -> Found {
        let rest = &self.text[pos..];
        let word_len = rest.bytes().take_while(|&b| is_label_byte(b)).count();
        if word_len > 0 {
            return Found::Word(Found::echo(&rest[..word_len]));
        }
        rest.chars().next().map_or(Found::EndOfInput, Found::Char)
    }

    fn unexpected(&self, pos: usize, expected: Expected) -> SelectorError {
        SelectorError::unexpected(pos, expected, self.found_at(pos))
    }

    /// Reads one token starting at `pos`, which is not whitespace.
    fn next_token(&mut self, previous_is_label: bool) -> Result<TokenKind<'a>, SelectorError> {
        let start = self.pos;
        let Some(&first) = self.bytes.get(start) else {
            return Ok(TokenKind::Eof);
        };
        let second = self.bytes.get(start + 1).copied();
        let (kind, len) = match (first, second) {
            (b'(', _) => (TokenKind::LParen, 1),
            (b')', _) => (TokenKind::RParen, 1),
            (b'{', _) => (TokenKind::LBrace, 1),
            (b'}', _) => (TokenKind::RBrace, 1),
            (b',', _) => (TokenKind::Comma, 1),
            (b'=', Some(b'=')) => (TokenKind::Eq, 2),
            (b'!', Some(b'=')) => (TokenKind::Ne, 2),
            (b'!', _) => (TokenKind::Not, 1),
            (b'&', Some(b'&')) => (TokenKind::And, 2),
            (b'|', Some(b'|')) => (TokenKind::Or, 2),
            (b'=' | b'&' | b'|', _) => {
                let lone = char::from(first);
                return Err(SelectorError::unexpected(
                    start,
                    Expected::Doubled(lone),
                    Found::Lone(lone),
                ));
            }
            (b'"' | b'\'', _) => return self.string_literal(first),
            _ if previous_is_label => return self.word_operator(),
            _ => return self.builtin_or_label(),
        };
        self.pos += len;
        Ok(kind)
    }

    /// A literal runs to the next quote of the same kind; there are no escapes.
    fn string_literal(&mut self, quote: u8) -> Result<TokenKind<'a>, SelectorError> {
        let open = self.pos;
        let content_start = open + 1;
        let Some(len) = self.bytes[content_start..].iter().position(|&b| b == quote) else {
            return Err(SelectorError {
                position: open,
                kind: SelectorErrorKind::UnterminatedString {
                    quote: char::from(quote),
                },
            });
        };
        // Quotes are ASCII, so both ends of the content are char boundaries.
        let content = &self.text[content_start..content_start + len];
        self.pos = content_start + len + 1;
        Ok(TokenKind::Str(content))
    }

    /// After a label only an operator word may follow. The last word of an operator must
    /// end at a word boundary; for two-word operators whitespace after the last word is
    /// skipped before that check (Calico's quirk), which only changes which of two
    /// errors `a not in x` reports.
    fn word_operator(&mut self) -> Result<TokenKind<'a>, SelectorError> {
        let start = self.pos;
        for (words, kind) in WORD_OPERATORS {
            let mut pos = start;
            let mut all_words_present = true;
            for word in words {
                if !self.bytes[pos..].starts_with(word.as_bytes()) {
                    all_words_present = false;
                    break;
                }
                pos += word.len();
                if words.len() > 1 {
                    while self.bytes.get(pos).copied().is_some_and(is_space) {
                        pos += 1;
                    }
                }
            }
            if !all_words_present {
                continue;
            }
            if self.bytes.get(pos).copied().is_some_and(is_label_byte) {
                if words.len() > 1 {
                    return Err(self.unexpected(pos, Expected::WordBoundaryAfter(kind.symbol())));
                }
                // `inf` or `containsx`: not this operator; Calico tries the rest.
                continue;
            }
            self.pos = pos;
            return Ok(kind);
        }
        let label = self.previous_label(start);
        Err(self.unexpected(start, Expected::OperatorAfter { label }))
    }

    /// The label token that ends just before `pos` (modulo whitespace), for a message.
    fn previous_label(&self, pos: usize) -> Box<str> {
        let before = self.text[..pos].trim_end_matches([' ', '\t']);
        let start = before
            .bytes()
            .rposition(|b| !is_label_byte(b))
            .map_or(0, |index| index + 1);
        Found::echo(&before[start..])
    }

    fn builtin_or_label(&mut self) -> Result<TokenKind<'a>, SelectorError> {
        if self.rest().starts_with(b"has(") {
            self.pos += "has(".len();
            self.skip_space();
            let label = self.label(Expected::HasLabel)?;
            self.skip_space();
            self.close_builtin("has(")?;
            return Ok(TokenKind::Has(label));
        }
        for (builtin, kind) in [("all(", TokenKind::All), ("global(", TokenKind::Global)] {
            if self.rest().starts_with(builtin.as_bytes()) {
                self.pos += builtin.len();
                self.skip_space();
                self.close_builtin(builtin)?;
                return Ok(kind);
            }
        }
        self.label(Expected::Token).map(TokenKind::Label)
    }

    fn close_builtin(&mut self, builtin: &'static str) -> Result<(), SelectorError> {
        if self.rest().first() == Some(&b')') {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.unexpected(self.pos, Expected::BuiltinClose(builtin)))
        }
    }

    /// Reads the longest run of label bytes; `expected` describes what is missing when
    /// there is none.
    fn label(&mut self, expected: Expected) -> Result<&'a str, SelectorError> {
        let start = self.pos;
        let len = self
            .rest()
            .iter()
            .take_while(|&&b| is_label_byte(b))
            .count();
        if len == 0 {
            return Err(self.unexpected(start, expected));
        }
        if len > MAX_LABEL_LEN {
            return Err(SelectorError {
                position: start,
                kind: SelectorErrorKind::LabelTooLong { length: len },
            });
        }
        self.pos += len;
        Ok(&self.text[start..start + len])
    }
}
