//! Fuzzes the selector parser: no input may panic it, and whatever parses must print a
//! canonical text that parses back to the same selector and evaluates the same.

#![no_main]

use std::collections::BTreeMap;

use fedwall::selector::{Expr, Selector};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The language is byte-based but the API takes `str`; invalid UTF-8 becomes U+FFFD,
    // which is an error outside a literal and an ordinary value inside one.
    let text = String::from_utf8_lossy(data);
    let Ok(selector) = Selector::parse(&text) else {
        return;
    };
    let canonical = selector.canonical();
    let reparsed = match Selector::parse(&canonical) {
        Ok(reparsed) => reparsed,
        Err(error) => panic!("canonical text {canonical:?} of {text:?} does not parse: {error}"),
    };
    assert_eq!(
        reparsed.canonical(),
        canonical,
        "canonical text is not a fixed point for {text:?}"
    );
    assert_eq!(
        reparsed, selector,
        "canonical text parses to a different tree for {text:?}"
    );

    let labels = labels_from(&selector, data);
    assert_eq!(
        reparsed.matches(&labels),
        selector.matches(&labels),
        "evaluation differs after canonicalising {text:?} on {labels:?}"
    );
});

/// A label map over the keys the selector reads, with values taken from its own literals
/// (so that comparisons can come out either way); the input bytes pick which keys are
/// present and which literal each gets.
fn labels_from(selector: &Selector, data: &[u8]) -> BTreeMap<String, String> {
    let mut values = vec![String::new()];
    collect_values(selector.expr(), &mut values);
    let mut picks = data.iter().rev().copied().chain(std::iter::repeat(0));
    let mut labels = BTreeMap::new();
    for key in selector.label_keys() {
        let pick = picks.next().map_or(0, usize::from);
        if pick % 4 != 0 {
            labels.insert(key.to_owned(), values[pick % values.len()].clone());
        }
    }
    labels
}

fn collect_values(expr: &Expr, values: &mut Vec<String>) {
    match expr {
        Expr::All | Expr::Global | Expr::Has { .. } => {}
        Expr::Equal { value, .. }
        | Expr::NotEqual { value, .. }
        | Expr::Contains { value, .. }
        | Expr::StartsWith { value, .. }
        | Expr::EndsWith { value, .. } => values.push(value.to_string()),
        Expr::In { values: set, .. } | Expr::NotIn { values: set, .. } => {
            values.extend(set.iter().map(str::to_owned));
        }
        Expr::Not(operand) => collect_values(operand, values),
        Expr::And(operands) | Expr::Or(operands) => {
            for operand in operands {
                collect_values(operand, values);
            }
        }
    }
}
