//! Recursive-descent parser from tokens to [`Expr`] (SELECTORS.md §2): `||` binds
//! loosest, `!` applies to one primary, parentheses leave no node behind.

use super::error::{Expected, SelectorError, SelectorErrorKind};
use super::expr::{Expr, StringSet};
use super::lexer::{Token, TokenKind, tokenize};

/// How deeply parentheses may nest. Calico has no limit, but the parser, evaluator and
/// printer recurse, and a selector comes from user-written policy: without a limit a
/// long run of `(` would overflow the agent's stack. Real selectors nest a few levels.
pub const MAX_NESTING: usize = 128;

/// Parses selector text; empty or blank (spaces and tabs) text is `all()`.
pub(super) fn parse(text: &str) -> Result<Expr, SelectorError> {
    let tokens = tokenize(text)?;
    let mut parser = Parser {
        tokens: &tokens,
        next: 0,
    };
    if parser.peek().kind == TokenKind::Eof {
        return Ok(Expr::All);
    }
    let expr = parser.or(0)?;
    let end = parser.peek();
    if end.kind != TokenKind::Eof {
        return Err(SelectorError::unexpected(
            end.start,
            Expected::End,
            end.kind.found(),
        ));
    }
    Ok(expr)
}

struct Parser<'t, 'a> {
    /// Always ends with `Eof`, so `peek` never runs off the end.
    tokens: &'t [Token<'a>],
    next: usize,
}

impl<'a> Parser<'_, 'a> {
    fn peek(&self) -> Token<'a> {
        // `tokenize` always ends the list with Eof and nothing consumes past it.
        self.tokens[self.next.min(self.tokens.len() - 1)]
    }

    fn advance(&mut self) -> Token<'a> {
        let token = self.peek();
        if token.kind != TokenKind::Eof {
            self.next += 1;
        }
        token
    }

    fn unexpected(&self, expected: Expected) -> SelectorError {
        let token = self.peek();
        SelectorError::unexpected(token.start, expected, token.kind.found())
    }

    /// `and ( "||" and )*`, one n-ary node (or the single operand).
    fn or(&mut self, depth: usize) -> Result<Expr, SelectorError> {
        let mut operands = vec![self.and(depth)?];
        while self.peek().kind == TokenKind::Or {
            self.advance();
            operands.push(self.and(depth)?);
        }
        Ok(single_or(operands, Expr::Or))
    }

    /// `unary ( "&&" unary )*`.
    fn and(&mut self, depth: usize) -> Result<Expr, SelectorError> {
        let mut operands = vec![self.unary(depth)?];
        while self.peek().kind == TokenKind::And {
            self.advance();
            operands.push(self.unary(depth)?);
        }
        Ok(single_or(operands, Expr::And))
    }

    /// `"!"* primary`: only the parity of the `!`s matters.
    fn unary(&mut self, depth: usize) -> Result<Expr, SelectorError> {
        let mut negated = false;
        while self.peek().kind == TokenKind::Not {
            self.advance();
            negated = !negated;
        }
        let primary = self.primary(depth)?;
        Ok(if negated { primary.negate() } else { primary })
    }

    fn primary(&mut self, depth: usize) -> Result<Expr, SelectorError> {
        let token = self.peek();
        match token.kind {
            TokenKind::Has(label) => {
                self.advance();
                Ok(Expr::Has {
                    label: label.into(),
                })
            }
            TokenKind::All => {
                self.advance();
                Ok(Expr::All)
            }
            TokenKind::Global => {
                self.advance();
                Ok(Expr::Global)
            }
            TokenKind::Label(label) => {
                self.advance();
                self.label_operation(label)
            }
            TokenKind::LParen => {
                if depth >= MAX_NESTING {
                    return Err(SelectorError {
                        position: token.start,
                        kind: SelectorErrorKind::NestedTooDeep,
                    });
                }
                self.advance();
                let inner = self.or(depth + 1)?;
                if self.peek().kind != TokenKind::RParen {
                    return Err(self.unexpected(Expected::CloseParen { open: token.start }));
                }
                self.advance();
                Ok(inner)
            }
            _ => Err(self.unexpected(Expected::Term)),
        }
    }

    /// What follows a label: an operator and a string literal or a set.
    fn label_operation(&mut self, label: &str) -> Result<Expr, SelectorError> {
        let operator = self.peek().kind;
        let label: Box<str> = label.into();
        match operator {
            TokenKind::Eq
            | TokenKind::Ne
            | TokenKind::Contains
            | TokenKind::StartsWith
            | TokenKind::EndsWith => {
                self.advance();
                let TokenKind::Str(value) = self.peek().kind else {
                    return Err(self.unexpected(Expected::StringAfter(operator.symbol())));
                };
                self.advance();
                let value: Box<str> = value.into();
                Ok(match operator {
                    TokenKind::Eq => Expr::Equal { label, value },
                    TokenKind::Ne => Expr::NotEqual { label, value },
                    TokenKind::Contains => Expr::Contains { label, value },
                    TokenKind::StartsWith => Expr::StartsWith { label, value },
                    _ => Expr::EndsWith { label, value },
                })
            }
            TokenKind::In | TokenKind::NotIn => {
                self.advance();
                let values = self.set(operator.symbol())?;
                Ok(if operator == TokenKind::In {
                    Expr::In { label, values }
                } else {
                    Expr::NotIn { label, values }
                })
            }
            _ => Err(self.unexpected(Expected::OperatorAfter { label })),
        }
    }

    /// `"{" [ S ( "," S )* [ "," ] ] "}"`.
    fn set(&mut self, operator: &'static str) -> Result<StringSet, SelectorError> {
        if self.peek().kind != TokenKind::LBrace {
            return Err(self.unexpected(Expected::SetAfter(operator)));
        }
        self.advance();
        let mut items: Vec<Box<str>> = Vec::new();
        loop {
            match self.peek().kind {
                TokenKind::RBrace => break,
                TokenKind::Str(item) => {
                    self.advance();
                    items.push(item.into());
                }
                _ => return Err(self.unexpected(Expected::SetItemOrClose)),
            }
            match self.peek().kind {
                TokenKind::Comma => {
                    self.advance();
                }
                TokenKind::RBrace => break,
                _ => return Err(self.unexpected(Expected::CommaOrClose)),
            }
        }
        self.advance();
        Ok(items.into_iter().collect())
    }
}

/// An n-ary node with one operand is just that operand.
fn single_or(mut operands: Vec<Expr>, group: fn(Vec<Expr>) -> Expr) -> Expr {
    if operands.len() == 1
        && let Some(only) = operands.pop()
    {
        return only;
    }
    group(operands)
}
