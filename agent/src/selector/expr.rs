//! The selector syntax tree: what the parser builds, how it prints in canonical form
//! (SELECTORS.md §4) and how it evaluates against a label map (§3).

use std::fmt;

use super::Labels;

/// One node of a parsed selector.
///
/// Every tree reachable through [`super::Selector`] has the shape the parser gives it:
/// `And`/`Or` have at least two operands, a `Not` never wraps another `Not`, and no value
/// holds both quote characters. Those invariants are what make the canonical text
/// parse back to the same tree, so `Selector` is only built by the parser.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expr {
    /// `all()`: matches everything.
    All,
    /// `global()`: matches everything here; only its text and UID differ from `all()`.
    Global,
    /// `has(label)`.
    Has { label: Box<str> },
    /// `label == "value"`.
    Equal { label: Box<str>, value: Box<str> },
    /// `label != "value"`: true when the label is absent.
    NotEqual { label: Box<str>, value: Box<str> },
    /// `label contains "value"`.
    Contains { label: Box<str>, value: Box<str> },
    /// `label starts with "value"`.
    StartsWith { label: Box<str>, value: Box<str> },
    /// `label ends with "value"`.
    EndsWith { label: Box<str>, value: Box<str> },
    /// `label in {…}`.
    In { label: Box<str>, values: StringSet },
    /// `label not in {…}`: true when the label is absent.
    NotIn { label: Box<str>, values: StringSet },
    /// `!operand`.
    Not(Box<Expr>),
    /// `(a && b && …)`, n-ary as written.
    And(Vec<Expr>),
    /// `(a || b || …)`, n-ary as written.
    Or(Vec<Expr>),
}

/// The items of an `in`/`not in` set: sorted by byte order and free of duplicates, so
/// membership is a binary search and the canonical text is the same however the set
/// was written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct StringSet(Box<[Box<str>]>);

impl StringSet {
    /// Whether `value` is one of the items.
    pub fn contains(&self, value: &str) -> bool {
        // `str`'s `Ord` is byte order, the order the items were sorted in.
        self.0.binary_search_by(|item| (**item).cmp(value)).is_ok()
    }

    /// The items in byte order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> {
        self.0.iter().map(|item| &**item)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<Box<str>> for StringSet {
    fn from_iter<I: IntoIterator<Item = Box<str>>>(items: I) -> Self {
        let mut items: Vec<Box<str>> = items.into_iter().collect();
        items.sort_unstable();
        items.dedup();
        StringSet(items.into_boxed_slice())
    }
}

impl Expr {
    /// Negates `self` the way the parser does: a `!` in front of a parenthesised `!x`
    /// cancels it rather than building `!!x`, whose canonical text `!!x` would parse
    /// back as plain `x` (see `negating_a_negated_group_cancels` in the tests).
    pub(super) fn negate(self) -> Expr {
        match self {
            Expr::Not(inner) => *inner,
            other => Expr::Not(Box::new(other)),
        }
    }

    /// Evaluates this node against `labels` (SELECTORS.md §3). Allocation-free: it runs
    /// for every endpoint × selector pair.
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        match self {
            Expr::All | Expr::Global => true,
            Expr::Has { label } => labels.get(label).is_some(),
            Expr::Equal { label, value } => labels.get(label) == Some(&**value),
            Expr::NotEqual { label, value } => labels.get(label) != Some(&**value),
            Expr::Contains { label, value } => {
                labels.get(label).is_some_and(|v| v.contains(&**value))
            }
            Expr::StartsWith { label, value } => {
                labels.get(label).is_some_and(|v| v.starts_with(&**value))
            }
            Expr::EndsWith { label, value } => {
                labels.get(label).is_some_and(|v| v.ends_with(&**value))
            }
            Expr::In { label, values } => labels.get(label).is_some_and(|v| values.contains(v)),
            Expr::NotIn { label, values } => !labels.get(label).is_some_and(|v| values.contains(v)),
            Expr::Not(operand) => !operand.matches(labels),
            Expr::And(operands) => operands.iter().all(|operand| operand.matches(labels)),
            Expr::Or(operands) => operands.iter().any(|operand| operand.matches(labels)),
        }
    }

    /// Calls `visit` with every label key this node reads, in text order, repeats included.
    pub(super) fn for_each_label<'a>(&'a self, visit: &mut impl FnMut(&'a str)) {
        match self {
            Expr::All | Expr::Global => {}
            Expr::Has { label }
            | Expr::Equal { label, .. }
            | Expr::NotEqual { label, .. }
            | Expr::Contains { label, .. }
            | Expr::StartsWith { label, .. }
            | Expr::EndsWith { label, .. }
            | Expr::In { label, .. }
            | Expr::NotIn { label, .. } => visit(label),
            Expr::Not(operand) => operand.for_each_label(visit),
            Expr::And(operands) | Expr::Or(operands) => {
                for operand in operands {
                    operand.for_each_label(visit);
                }
            }
        }
    }

    /// Calls `visit` with every label key this node reads, to rewrite it in place.
    pub(super) fn for_each_label_mut(&mut self, visit: &mut impl FnMut(&mut Box<str>)) {
        match self {
            Expr::All | Expr::Global => {}
            Expr::Has { label }
            | Expr::Equal { label, .. }
            | Expr::NotEqual { label, .. }
            | Expr::Contains { label, .. }
            | Expr::StartsWith { label, .. }
            | Expr::EndsWith { label, .. }
            | Expr::In { label, .. }
            | Expr::NotIn { label, .. } => visit(label),
            Expr::Not(operand) => operand.for_each_label_mut(visit),
            Expr::And(operands) | Expr::Or(operands) => {
                for operand in operands {
                    operand.for_each_label_mut(visit);
                }
            }
        }
    }

    /// Writes the canonical text of this node (SELECTORS.md §4).
    pub(super) fn write_canonical(&self, out: &mut impl fmt::Write) -> fmt::Result {
        match self {
            Expr::All => out.write_str("all()"),
            Expr::Global => out.write_str("global()"),
            Expr::Has { label } => write!(out, "has({label})"),
            Expr::Equal { label, value } => write_comparison(out, label, "==", value),
            Expr::NotEqual { label, value } => write_comparison(out, label, "!=", value),
            Expr::Contains { label, value } => write_comparison(out, label, "contains", value),
            Expr::StartsWith { label, value } => write_comparison(out, label, "starts with", value),
            Expr::EndsWith { label, value } => write_comparison(out, label, "ends with", value),
            Expr::In { label, values } => write_set(out, label, "in", values),
            Expr::NotIn { label, values } => write_set(out, label, "not in", values),
            Expr::Not(operand) => {
                out.write_char('!')?;
                operand.write_canonical(out)
            }
            Expr::And(operands) => write_group(out, operands, " && "),
            Expr::Or(operands) => write_group(out, operands, " || "),
        }
    }
}

fn write_comparison(
    out: &mut impl fmt::Write,
    label: &str,
    operator: &str,
    value: &str,
) -> fmt::Result {
    write!(out, "{label} {operator} ")?;
    write_quoted(out, value)
}

fn write_set(
    out: &mut impl fmt::Write,
    label: &str,
    operator: &str,
    values: &StringSet,
) -> fmt::Result {
    write!(out, "{label} {operator} {{")?;
    for (index, value) in values.iter().enumerate() {
        if index > 0 {
            out.write_str(", ")?;
        }
        write_quoted(out, value)?;
    }
    out.write_char('}')
}

/// And/Or are parenthesised even at the top level, as Calico prints them.
fn write_group(out: &mut impl fmt::Write, operands: &[Expr], separator: &str) -> fmt::Result {
    out.write_char('(')?;
    for (index, operand) in operands.iter().enumerate() {
        if index > 0 {
            out.write_str(separator)?;
        }
        operand.write_canonical(out)?;
    }
    out.write_char(')')
}

/// Literals have no escapes, so a value is quoted with whichever quote it does not
/// contain; `"` unless it has to be `'`.
pub(super) fn write_quoted(out: &mut impl fmt::Write, value: &str) -> fmt::Result {
    let quote = if value.contains('"') { '\'' } else { '"' };
    out.write_char(quote)?;
    out.write_str(value)?;
    out.write_char(quote)
}
