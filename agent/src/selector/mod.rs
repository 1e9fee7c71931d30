//! The Calico selector language (../shared/SELECTORS.md): parse, canonical text, unique id
//! and evaluation against a label map.
//!
//! ```
//! use std::collections::BTreeMap;
//! use fedwall::selector::Selector;
//!
//! let selector = Selector::parse("role == 'db' && has(tier)").expect("valid selector");
//! assert_eq!(selector.canonical(), r#"(role == "db" && has(tier))"#);
//! let labels = BTreeMap::from([("role".to_owned(), "db".to_owned()), ("tier".to_owned(), String::new())]);
//! assert!(selector.matches(&labels));
//! ```

mod error;
mod expr;
pub mod index;
mod label_set;
mod lexer;
mod parser;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::BuildHasher;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha224};

pub use error::{Expected, Found, SelectorError, SelectorErrorKind};
pub use expr::{Expr, StringSet};
pub use label_set::{LabelSet, LabelStrings};
pub use parser::MAX_NESTING;

/// The longest label key, in bytes, a selector may name.
pub const MAX_LABEL_LEN: usize = lexer::MAX_LABEL_LEN;

/// Whether `key` can be named in a selector: 1 to 512 bytes of `[A-Za-z0-9_./-]`.
pub fn is_valid_label_key(key: &str) -> bool {
    (1..=MAX_LABEL_LEN).contains(&key.len()) && key.bytes().all(lexer::is_label_byte)
}

/// A read-only view of an endpoint's labels. Evaluation only looks keys up, so a
/// composite view (pod labels overlaid with namespace labels, say) can implement this
/// without building a merged map.
pub trait Labels {
    /// The value of label `key`, if the label is present (an empty value is present).
    fn get(&self, key: &str) -> Option<&str>;
}

impl<S: BuildHasher> Labels for HashMap<String, String, S> {
    fn get(&self, key: &str) -> Option<&str> {
        HashMap::get(self, key).map(String::as_str)
    }
}

impl Labels for BTreeMap<String, String> {
    fn get(&self, key: &str) -> Option<&str> {
        BTreeMap::get(self, key).map(String::as_str)
    }
}

impl<L: Labels + ?Sized> Labels for &L {
    fn get(&self, key: &str) -> Option<&str> {
        (**self).get(key)
    }
}

/// A parsed selector. Two selectors are equal exactly when their canonical texts are.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Selector {
    // Private so that every `Selector` comes from the parser and keeps the invariants
    // documented on `Expr`.
    root: Expr,
}

impl Selector {
    /// Parses selector text (SELECTORS.md §1–2). Empty or blank text is `all()`; text is
    /// not trimmed of newlines, which are an error.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        parser::parse(text).map(|root| Selector { root })
    }

    /// `all()`, the selector that matches every endpoint.
    pub fn all() -> Selector {
        Selector { root: Expr::All }
    }

    /// Whether this is `all()` (`global()` also matches everything, but is a different
    /// selector: its meaning is given by where it is used).
    pub fn is_all(&self) -> bool {
        self.root == Expr::All
    }

    /// The syntax tree, for code that indexes selectors by what they read.
    pub fn expr(&self) -> &Expr {
        &self.root
    }

    /// Whether the selector matches an endpoint with `labels` (SELECTORS.md §3).
    /// Does not allocate.
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        self.root.matches(labels)
    }

    /// The canonical text (SELECTORS.md §4), the same as `to_string()`.
    pub fn canonical(&self) -> String {
        self.to_string()
    }

    /// `"s:" + base64url_nopad(SHA-224("s:" + canonical))`, Calico's selector UID.
    pub fn unique_id(&self) -> String {
        let mut hasher = Sha224::new();
        hasher.update(b"s:");
        hasher.update(self.canonical().as_bytes());
        format!("s:{}", URL_SAFE_NO_PAD.encode(hasher.finalize()))
    }

    /// The label keys the selector reads, sorted by byte order and without repeats: an
    /// endpoint whose labels change only outside these keys keeps its match result.
    pub fn label_keys(&self) -> Vec<&str> {
        let mut keys = Vec::new();
        self.root.for_each_label(&mut |key| keys.push(key));
        keys.sort_unstable();
        keys.dedup();
        keys
    }
}

impl Selector {
    /// The same selector reading `prefix + key` wherever it read `key` (Calico's
    /// PrefixVisitor): a namespace selector becomes a selector on an endpoint's `pcns.`
    /// labels, a service-account selector one on its `pcsa.` labels.
    pub fn with_label_prefix(&self, prefix: &str) -> Selector {
        let mut root = self.root.clone();
        root.for_each_label_mut(&mut |label| *label = format!("{prefix}{label}").into());
        Selector { root }
    }

    /// `(self) && (other)` as Calico composes them (text joined, then parsed), with an
    /// `all()` side dropped.
    pub fn and(&self, other: &Selector) -> Selector {
        if self.is_all() {
            return other.clone();
        }
        if other.is_all() {
            return self.clone();
        }
        // Canonical texts always parse back; the fallback only keeps this total.
        Selector::parse(&format!("({self}) && ({other})")).unwrap_or_else(|_| Selector {
            root: Expr::And(vec![self.root.clone(), other.root.clone()]),
        })
    }
}

/// `value` as a selector literal, or `None` when it holds both quote characters and so
/// cannot be written in the language (it has no escapes).
pub fn quote_literal(value: &str) -> Option<String> {
    if value.contains('"') && value.contains('\'') {
        return None;
    }
    let mut out = String::with_capacity(value.len() + 2);
    expr::write_quoted(&mut out, value).ok()?;
    Some(out)
}

impl Default for Selector {
    /// An empty selector is `all()`.
    fn default() -> Self {
        Selector::all()
    }
}

impl fmt::Display for Selector {
    /// Writes the canonical text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.root.write_canonical(f)
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Selector::parse(text)
    }
}
