//! A fast reader for the plain block subset of YAML that manifests are written in: block
//! mappings and sequences, one-line plain and quoted scalars, `{}` and `[]`, comments.
//! Reading a large file datastore is mostly reading such documents, and libyaml (through
//! serde_yaml) spent ~15 µs on each 15-line pod; this reader takes a small part of that.
//!
//! It is an accelerator, never a second YAML dialect: [`from_str`] gives `None` for anything
//! outside the subset (anchors, tags, block scalars, multi-line or non-ASCII scalars, flow
//! collections with content, tabs…) and for anything the target type rejects, and the
//! caller then reads the document with serde_yaml, which gives the answer or the error
//! with its line. Where it answers, it answers as serde_yaml does: the same events reach
//! the same visitors, and a plain scalar is typed by serde_yaml's rules (null, booleans,
//! decimal integers, floats Rust's parser reads); any scalar whose type it cannot settle
//! that cheaply (hex, octal, `.inf`, leading zeros) is left to serde_yaml.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Visitor};

/// `text` (one document) as a `T`, or `None` when serde_yaml must read it.
pub fn from_str<'de, T: Deserialize<'de>>(text: &'de str) -> Option<T> {
    let mut events = Events {
        events: parse(text).ok()?,
        next: 0,
    };
    let value = T::deserialize(&mut events).ok()?;
    (events.next == events.events.len()).then_some(value)
}

/// Why the reader leaves a document to serde_yaml. It carries nothing: serde_yaml reads the
/// document again and says what is wrong, if anything is.
#[derive(Debug)]
pub struct Unsupported;

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("outside the plain block subset of YAML")
    }
}

impl std::error::Error for Unsupported {}

impl de::Error for Unsupported {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Unsupported
    }
}

type Parsed<T = ()> = Result<T, Unsupported>;

/// libyaml's event stream for a document in the subset (no aliases, no tags).
#[derive(Debug, PartialEq)]
enum Event<'a> {
    Scalar { value: Cow<'a, str>, plain: bool },
    MapStart,
    MapEnd,
    SeqStart,
    SeqEnd,
}

impl<'a> Event<'a> {
    fn plain(value: &'a str) -> Event<'a> {
        Event::Scalar {
            value: Cow::Borrowed(value),
            plain: true,
        }
    }
}

/// A line holding content: its indentation and the text after it.
#[derive(Clone, Copy)]
struct Line<'a> {
    indent: usize,
    text: &'a str,
}

/// Nesting deeper than this is left to serde_yaml (whose own limit is 128).
const MAX_DEPTH: usize = 64;
/// libyaml's limit on the length of a key written without `?`.
const MAX_KEY: usize = 1024;

fn parse(text: &str) -> Parsed<Vec<Event<'_>>> {
    check_characters(text)?;
    let lines: Vec<Line<'_>> = text
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .filter_map(|line| {
            let content = line.trim_start_matches(' ');
            (!content.is_empty() && !content.starts_with('#')).then(|| Line {
                indent: line.len() - content.len(),
                text: content,
            })
        })
        .collect();
    // Content on the first line after indentation is what follows a `---` marker on its
    // line (`--- a: b`, which is not a mapping): left to serde_yaml, as is a document that
    // is not a mapping or sequence at column 0.
    if lines.first().is_none_or(|line| line.indent != 0) {
        return Err(Unsupported);
    }
    let mut parser = Parser {
        events: Vec::with_capacity(lines.len() * 3),
        lines,
        next: 0,
        depth: 0,
    };
    parser.node(0)?;
    if parser.next != parser.lines.len() {
        return Err(Unsupported);
    }
    Ok(parser.events)
}

/// Printable ASCII, and line feeds (optionally after a carriage return): anything else
/// (tabs, other control characters, non-ASCII text whose line breaks and escapes differ
/// between YAML versions) is left to serde_yaml.
fn check_characters(text: &str) -> Parsed {
    let bytes = text.as_bytes();
    for (i, &byte) in bytes.iter().enumerate() {
        let allowed = match byte {
            b' '..=b'~' | b'\n' => true,
            b'\r' => bytes.get(i + 1) == Some(&b'\n'),
            _ => false,
        };
        if !allowed {
            return Err(Unsupported);
        }
    }
    Ok(())
}

struct Parser<'a> {
    lines: Vec<Line<'a>>,
    next: usize,
    events: Vec<Event<'a>>,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<Line<'a>> {
        self.lines.get(self.next).copied()
    }

    /// The block node whose first line is the next one, at `indent`.
    fn node(&mut self, indent: usize) -> Parsed {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Unsupported);
        }
        let line = self.peek().ok_or(Unsupported)?;
        if is_sequence_entry(line.text) {
            self.sequence(indent)?;
        } else {
            self.mapping(indent)?;
        }
        self.depth -= 1;
        Ok(())
    }

    fn mapping(&mut self, indent: usize) -> Parsed {
        self.events.push(Event::MapStart);
        while let Some(line) = self.peek().filter(|line| line.indent == indent) {
            let (key, rest) = split_entry(line.text).ok_or(Unsupported)?;
            self.events.push(key);
            self.next += 1;
            self.value(indent, rest, false)?;
        }
        self.end_of_block(indent)?;
        self.events.push(Event::MapEnd);
        Ok(())
    }

    fn sequence(&mut self, indent: usize) -> Parsed {
        self.events.push(Event::SeqStart);
        while let Some(line) = self
            .peek()
            .filter(|line| line.indent == indent && is_sequence_entry(line.text))
        {
            let after_dash = &line.text[1..];
            let body = after_dash.trim_start_matches(' ');
            if is_sequence_entry(body) {
                return Err(Unsupported);
            }
            if split_entry(body).is_some() {
                // `- key: value` starts a mapping at the key's column.
                let column = indent + 1 + (after_dash.len() - body.len());
                self.lines[self.next] = Line {
                    indent: column,
                    text: body,
                };
                self.node(column)?;
            } else {
                self.next += 1;
                self.value(indent, body, true)?;
            }
        }
        self.end_of_block(indent)?;
        self.events.push(Event::SeqEnd);
        Ok(())
    }

    /// A block ends at a line indented less than it: one indented more is a continuation
    /// line or an error, either way serde_yaml's to read.
    fn end_of_block(&self, indent: usize) -> Parsed {
        match self.peek() {
            Some(line) if line.indent > indent => Err(Unsupported),
            _ => Ok(()),
        }
    }

    /// The value of a mapping entry or sequence entry on a line at `indent`, given what
    /// follows its `:` or `-` on that line.
    fn value(&mut self, indent: usize, rest: &'a str, in_sequence: bool) -> Parsed {
        let rest = rest.trim_start_matches(' ');
        if !rest.is_empty() && !rest.starts_with('#') {
            self.inline(rest)?;
            return self.end_of_block(indent);
        }
        match self.peek() {
            Some(line) if line.indent > indent => self.node(line.indent),
            // A mapping's sequence value may sit at the mapping's own indentation.
            Some(line) if !in_sequence && line.indent == indent && is_sequence_entry(line.text) => {
                self.node(indent)
            }
            _ => {
                self.events.push(Event::plain(""));
                Ok(())
            }
        }
    }

    /// A value written on its entry's line.
    fn inline(&mut self, text: &'a str) -> Parsed {
        let event = match text.as_bytes()[0] {
            b'"' | b'\'' => {
                let (scalar, after) = quoted(text)?;
                if !is_blank_or_comment(after) {
                    return Err(Unsupported);
                }
                scalar
            }
            b'{' | b'[' => {
                let (start, end) = match strip_comment(text) {
                    "{}" => (Event::MapStart, Event::MapEnd),
                    "[]" => (Event::SeqStart, Event::SeqEnd),
                    _ => return Err(Unsupported),
                };
                self.events.push(start);
                end
            }
            _ => {
                let value = strip_comment(text);
                if !starts_plain(value) || value.ends_with(':') || value.contains(": ") {
                    return Err(Unsupported);
                }
                Event::plain(value)
            }
        };
        self.events.push(event);
        Ok(())
    }
}

fn is_sequence_entry(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

/// Whether `text` may start a plain scalar: not with an indicator, and not with `-`, `?`
/// or `:` before a space.
fn starts_plain(text: &str) -> bool {
    match text.as_bytes() {
        [] => false,
        [b'-', next, ..] => *next != b' ',
        [b'-'] => false,
        [first, ..] => !b"?:,[]{}#&*!|>'\"%@`".contains(first),
    }
}

/// `text` up to a comment (`#` after a space), without trailing spaces.
fn strip_comment(text: &str) -> &str {
    let end = text.find(" #").unwrap_or(text.len());
    text[..end].trim_end_matches(' ')
}

fn is_blank_or_comment(text: &str) -> bool {
    let rest = text.trim_start_matches(' ');
    rest.is_empty() || (rest.len() < text.len() && rest.starts_with('#'))
}

/// A mapping entry's key event and what follows its `:`, or `None` when `text` is not an
/// entry of the subset.
fn split_entry(text: &str) -> Option<(Event<'_>, &str)> {
    if text.starts_with(['"', '\'']) {
        let (key, after) = quoted(text).ok()?;
        let rest = after.trim_start_matches(' ').strip_prefix(':')?;
        return (rest.is_empty() || rest.starts_with(' ')).then_some((key, rest));
    }
    if !starts_plain(text) {
        return None;
    }
    let bytes = text.as_bytes();
    let colon = (0..bytes.len()).find(|&i| {
        bytes[i] == b':' && bytes.get(i + 1).is_none_or(|next| *next == b' ')
            || bytes[i] == b'#' && bytes[i - 1] == b' '
    })?;
    if bytes[colon] == b'#' {
        return None;
    }
    let key = text[..colon].trim_end_matches(' ');
    (key.len() <= MAX_KEY).then(|| (Event::plain(key), &text[colon + 1..]))
}

/// A one-line quoted scalar at the start of `text`, and the text after its closing quote.
fn quoted(text: &str) -> Parsed<(Event<'_>, &str)> {
    let quote = text.as_bytes()[0];
    let body = &text[1..];
    let mut owned: Option<String> = None;
    let mut start = 0;
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        let (unescaped, skip) =
            if byte == quote && quote == b'\'' && bytes.get(i + 1) == Some(&b'\'') {
                ('\'', 2)
            } else if byte == quote {
                let value = match owned {
                    Some(mut value) => {
                        value.push_str(&body[start..i]);
                        Cow::Owned(value)
                    }
                    None => Cow::Borrowed(&body[..i]),
                };
                return Ok((
                    Event::Scalar {
                        value,
                        plain: false,
                    },
                    &body[i + 1..],
                ));
            } else if byte == b'\\' && quote == b'"' {
                let unescaped = match bytes.get(i + 1) {
                    Some(b'"') => '"',
                    Some(b'\\') => '\\',
                    Some(b'/') => '/',
                    Some(b'n') => '\n',
                    Some(b't') => '\t',
                    _ => return Err(Unsupported),
                };
                (unescaped, 2)
            } else {
                i += 1;
                continue;
            };
        let value = owned.get_or_insert_with(String::new);
        value.push_str(&body[start..i]);
        value.push(unescaped);
        i += skip;
        start = i;
    }
    // The closing quote is on a later line: a multi-line scalar, folded by rules left to
    // serde_yaml.
    Err(Unsupported)
}

/// The events of a document, handed to the visitors as serde_yaml hands its own.
struct Events<'de> {
    events: Vec<Event<'de>>,
    next: usize,
}

impl<'de> Events<'de> {
    fn peek(&self) -> Option<&Event<'de>> {
        self.events.get(self.next)
    }

    fn take_scalar(&mut self) -> Parsed<(Cow<'de, str>, bool)> {
        match self.events.get_mut(self.next) {
            Some(Event::Scalar { value, plain }) => {
                let taken = (std::mem::take(value), *plain);
                self.next += 1;
                Ok(taken)
            }
            _ => Err(Unsupported),
        }
    }

    /// Takes `end` after a visitor read a collection: a visitor that stopped before the
    /// end makes serde_yaml report the length, so the document is left to it.
    fn expect_end(&mut self, end: &Event<'_>) -> Parsed {
        if self.peek() != Some(end) {
            return Err(Unsupported);
        }
        self.next += 1;
        Ok(())
    }

    /// Whether the next event is a plain scalar serde_yaml reads as null (or as an empty
    /// collection where one is asked for).
    fn next_is_null(&self) -> bool {
        matches!(self.peek(), Some(Event::Scalar { value, plain: true }) if is_null(value))
    }

    fn skip_node(&mut self) -> Parsed {
        let mut depth = 0usize;
        loop {
            let event = self.peek().ok_or(Unsupported)?;
            match event {
                Event::MapStart | Event::SeqStart => depth += 1,
                Event::MapEnd | Event::SeqEnd => depth = depth.checked_sub(1).ok_or(Unsupported)?,
                Event::Scalar { .. } => {}
            }
            self.next += 1;
            if depth == 0 {
                return Ok(());
            }
        }
    }

    fn collection<V: Visitor<'de>>(&mut self, visitor: V, map: bool) -> Parsed<V::Value> {
        let (start, end) = if map {
            (Event::MapStart, Event::MapEnd)
        } else {
            (Event::SeqStart, Event::SeqEnd)
        };
        if self.peek() == Some(&start) {
            self.next += 1;
            let value = if map {
                visitor.visit_map(Access { de: self })?
            } else {
                visitor.visit_seq(Access { de: self })?
            };
            self.expect_end(&end)?;
            return Ok(value);
        }
        // An empty plain scalar (`spec:`) is an empty collection to serde_yaml.
        if matches!(self.peek(), Some(Event::Scalar { value, plain: true }) if value.is_empty()) {
            self.next += 1;
            return if map {
                visitor.visit_map(de::value::MapDeserializer::new(
                    std::iter::empty::<((), ())>(),
                ))
            } else {
                visitor.visit_seq(de::value::SeqDeserializer::new(std::iter::empty::<()>()))
            };
        }
        Err(Unsupported)
    }

    /// A plain scalar whose type is the plain decimal integer serde_yaml would read.
    fn take_integer<T: std::str::FromStr>(&mut self) -> Parsed<T> {
        let (value, plain) = self.take_scalar()?;
        let digits = value.strip_prefix('-').unwrap_or(&value);
        let decimal = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && (digits == "0" || !digits.starts_with('0'));
        if !plain || !decimal {
            return Err(Unsupported);
        }
        value.parse().map_err(|_| Unsupported)
    }
}

fn is_null(value: &str) -> bool {
    matches!(value, "" | "~" | "null" | "Null" | "NULL")
}

fn visit_str<'de, V: Visitor<'de>>(value: Cow<'de, str>, visitor: V) -> Parsed<V::Value> {
    match value {
        Cow::Borrowed(value) => visitor.visit_borrowed_str(value),
        Cow::Owned(value) => visitor.visit_string(value),
    }
}

/// What serde_yaml makes of an untagged plain scalar, where that is cheap to settle: null,
/// a boolean, a plain decimal integer, or a string that no number syntax can read (one that
/// does not start like a number, or holds a character no number has). Anything else
/// (hex, octal, floats, `.inf`, leading zeros) is left to serde_yaml.
fn visit_plain<'de, V: Visitor<'de>>(value: Cow<'de, str>, visitor: V) -> Parsed<V::Value> {
    if is_null(&value) {
        return visitor.visit_unit();
    }
    match &*value {
        "true" | "True" | "TRUE" => return visitor.visit_bool(true),
        "false" | "False" | "FALSE" => return visitor.visit_bool(false),
        _ => {}
    }
    let starts_like_number = value.starts_with(|c: char| c.is_ascii_digit() || "+-.".contains(c));
    if !starts_like_number {
        return visit_str(value, visitor);
    }
    let digits = value.strip_prefix('-').unwrap_or(&value);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
    {
        return match (
            value.starts_with('-'),
            value.parse::<u64>(),
            value.parse::<i64>(),
        ) {
            (false, Ok(n), _) => visitor.visit_u64(n),
            (true, _, Ok(n)) => visitor.visit_i64(n),
            _ => Err(Unsupported),
        };
    }
    // Characters of hex, octal and binary integers, floats, `.inf` and `.nan`.
    let numeric = |c: char| c.is_ascii_hexdigit() || "xXoOiInNtTyY+-.".contains(c);
    if value.chars().all(numeric) {
        return Err(Unsupported);
    }
    visit_str(value, visitor)
}

impl<'de> de::Deserializer<'de> for &mut Events<'de> {
    type Error = Unsupported;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Parsed<V::Value> {
        match self.peek().ok_or(Unsupported)? {
            Event::MapStart => self.collection(visitor, true),
            Event::SeqStart => self.collection(visitor, false),
            Event::Scalar { .. } => match self.take_scalar()? {
                (value, true) => visit_plain(value, visitor),
                (value, false) => visit_str(value, visitor),
            },
            Event::MapEnd | Event::SeqEnd => Err(Unsupported),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Parsed<V::Value> {
        match self.take_scalar()? {
            (value, true) => match &*value {
                "true" | "True" | "TRUE" => visitor.visit_bool(true),
                "false" | "False" | "FALSE" => visitor.visit_bool(false),
                _ => Err(Unsupported),
            },
            _ => Err(Unsupported),
        }
    }

    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Parsed<V::Value> {
        self.deserialize_i64(visitor)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Parsed<V::Value> {
        self.deserialize_i64(visitor)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Parsed<V::Value> {
        self.deserialize_i64(visitor)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Parsed<V::Value> {
        visitor.visit_i64(self.take_integer()?)
    }
    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Parsed<V::Value> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Parsed<V::Value> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Parsed<V::Value> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Parsed<V::Value> {
        visitor.visit_u64(self.take_integer()?)
    }
    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Parsed<V::Value> {
        self.deserialize_f64(visitor)
    }
    /// serde_yaml reads a float with Rust's own parser, after its `+`, `.inf` and `.nan`
    /// forms, which are left to it.
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Parsed<V::Value> {
        match self.take_scalar()? {
            (value, true) if !value.starts_with('+') => match value.parse::<f64>() {
                Ok(float) if float.is_finite() => visitor.visit_f64(float),
                _ => Err(Unsupported),
            },
            _ => Err(Unsupported),
        }
    }
    fn deserialize_char<V: Visitor<'de>>(self, _: V) -> Parsed<V::Value> {
        Err(Unsupported)
    }

    /// serde_yaml reads any scalar as a string when one is asked for.
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Parsed<V::Value> {
        visit_str(self.take_scalar()?.0, visitor)
    }
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Parsed<V::Value> {
        self.deserialize_str(visitor)
    }
    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Parsed<V::Value> {
        self.deserialize_str(visitor)
    }
    fn deserialize_bytes<V: Visitor<'de>>(self, _: V) -> Parsed<V::Value> {
        Err(Unsupported)
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, _: V) -> Parsed<V::Value> {
        Err(Unsupported)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Parsed<V::Value> {
        if self.next_is_null() {
            self.next += 1;
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Parsed<V::Value> {
        if !self.next_is_null() {
            return Err(Unsupported);
        }
        self.next += 1;
        visitor.visit_unit()
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Parsed<V::Value> {
        self.deserialize_unit(visitor)
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Parsed<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Parsed<V::Value> {
        self.collection(visitor, false)
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, visitor: V) -> Parsed<V::Value> {
        self.deserialize_seq(visitor)
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        visitor: V,
    ) -> Parsed<V::Value> {
        self.deserialize_seq(visitor)
    }
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Parsed<V::Value> {
        self.collection(visitor, true)
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Parsed<V::Value> {
        self.deserialize_map(visitor)
    }

    /// A scalar names a unit variant, as in serde_yaml; variants with content are written
    /// with tags, which the subset leaves out.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Parsed<V::Value> {
        match self.peek() {
            Some(Event::Scalar { .. }) => visitor.visit_enum(UnitVariant { de: self }),
            _ => Err(Unsupported),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Parsed<V::Value> {
        self.skip_node()?;
        visitor.visit_unit()
    }
}

/// Reads the entries of a mapping or the items of a sequence, up to its end event.
struct Access<'a, 'de> {
    de: &'a mut Events<'de>,
}

impl Access<'_, '_> {
    fn at_end(&self) -> bool {
        matches!(self.de.peek(), Some(Event::MapEnd | Event::SeqEnd) | None)
    }
}

impl<'de> de::MapAccess<'de> for Access<'_, 'de> {
    type Error = Unsupported;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Parsed<Option<K::Value>> {
        if self.at_end() {
            return Ok(None);
        }
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Parsed<V::Value> {
        seed.deserialize(&mut *self.de)
    }
}

impl<'de> de::SeqAccess<'de> for Access<'_, 'de> {
    type Error = Unsupported;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Parsed<Option<T::Value>> {
        if self.at_end() {
            return Ok(None);
        }
        seed.deserialize(&mut *self.de).map(Some)
    }
}

struct UnitVariant<'a, 'de> {
    de: &'a mut Events<'de>,
}

impl<'a, 'de> de::EnumAccess<'de> for UnitVariant<'a, 'de> {
    type Error = Unsupported;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Parsed<(V::Value, Self)> {
        Ok((seed.deserialize(&mut *self.de)?, self))
    }
}

impl<'de> de::VariantAccess<'de> for UnitVariant<'_, 'de> {
    type Error = Unsupported;

    fn unit_variant(self) -> Parsed {
        Ok(())
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _: T) -> Parsed<T::Value> {
        Err(Unsupported)
    }
    fn tuple_variant<V: Visitor<'de>>(self, _: usize, _: V) -> Parsed<V::Value> {
        Err(Unsupported)
    }
    fn struct_variant<V: Visitor<'de>>(self, _: &'static [&'static str], _: V) -> Parsed<V::Value> {
        Err(Unsupported)
    }
}

#[cfg(test)]
mod tests;
