//! Property tests: canonical text parses back to the same selector (and so is a fixed
//! point) and evaluates the same, and no input makes the parser panic.

use std::collections::BTreeMap;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::Config;

use super::{Expr, Selector};

/// Few keys and values, so that generated selectors and label maps meet often enough
/// for matches to go both ways. Keys include built-in and operator names, which are legal
/// labels; values include both quote kinds (never together: no literal can hold both).
const KEYS: &[&str] = &["a", "b", "in", "has", "not", "k8s-app", "x/y.z"];
const VALUES: &[&str] = &[
    "", "v", "vw", "wv", "w", "\"", "it's", "a\"b", " \t", "é", "\\",
];

/// Snippets that random text is glued together from: enough structure that a fair share
/// of the inputs parse, and enough junk that the rest fail in every way there is.
const FRAGMENTS: &[&str] = &[
    "a",
    "b",
    "in",
    "not",
    "has",
    "all",
    " ",
    " ",
    "\t",
    "(",
    ")",
    "{",
    "}",
    ",",
    "==",
    "!=",
    "!",
    "&&",
    "||",
    "=",
    "&",
    "|",
    "'v'",
    "\"w\"",
    "'\"'",
    "\"'\"",
    "''",
    "'",
    "\"",
    "has(a)",
    "has(",
    "all()",
    "global()",
    "contains",
    "starts",
    "with",
    "startswith",
    "ends",
    "notin",
    "x",
    "\n",
    "%",
    "é",
];

fn config() -> Config {
    // No regression files: they would land outside this module's directory.
    Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    }
}

fn key() -> impl Strategy<Value = Box<str>> {
    select(KEYS).prop_map(Box::from)
}

fn value() -> impl Strategy<Value = Box<str>> {
    select(VALUES).prop_map(Box::from)
}

/// Trees of the shape the parser builds (see `Expr`'s invariants).
fn expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        Just(Expr::All),
        Just(Expr::Global),
        key().prop_map(|label| Expr::Has { label }),
        (key(), value()).prop_map(|(label, value)| Expr::Equal { label, value }),
        (key(), value()).prop_map(|(label, value)| Expr::NotEqual { label, value }),
        (key(), value()).prop_map(|(label, value)| Expr::Contains { label, value }),
        (key(), value()).prop_map(|(label, value)| Expr::StartsWith { label, value }),
        (key(), value()).prop_map(|(label, value)| Expr::EndsWith { label, value }),
        (key(), vec(value(), 0..4)).prop_map(|(label, values)| Expr::In {
            label,
            values: values.into_iter().collect()
        }),
        (key(), vec(value(), 0..4)).prop_map(|(label, values)| Expr::NotIn {
            label,
            values: values.into_iter().collect()
        }),
    ];
    leaf.prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(Expr::negate),
            vec(inner.clone(), 2..4).prop_map(Expr::And),
            vec(inner, 2..4).prop_map(Expr::Or),
        ]
    })
}

fn label_maps() -> impl Strategy<Value = Vec<BTreeMap<String, String>>> {
    let key = select(KEYS).prop_map(str::to_owned);
    let value = select(VALUES).prop_map(str::to_owned);
    vec(btree_map(key, value, 0..5), 6)
}

/// Checks that a selector's canonical text parses back to the same selector, prints the
/// same, and evaluates the same on `maps`.
fn check_round_trip(
    selector: &Selector,
    maps: &[BTreeMap<String, String>],
) -> Result<(), TestCaseError> {
    let text = selector.canonical();
    let reparsed = Selector::parse(&text).map_err(|error| {
        TestCaseError::fail(format!("canonical text {text:?} does not parse: {error}"))
    })?;
    prop_assert_eq!(reparsed.canonical(), text.as_str());
    prop_assert_eq!(&reparsed, selector);
    prop_assert_eq!(reparsed.unique_id(), selector.unique_id());
    for labels in maps {
        prop_assert_eq!(
            reparsed.matches(labels),
            selector.matches(labels),
            "labels {:?}",
            labels
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn canonical_text_of_any_tree_round_trips(root in expr(), maps in label_maps()) {
        check_round_trip(&Selector { root }, &maps)?;
    }

    #[test]
    fn glued_fragments_never_panic_and_round_trip_when_valid(
        parts in vec(select(FRAGMENTS), 0..14),
        maps in label_maps(),
    ) {
        let text = parts.concat();
        if let Ok(selector) = Selector::parse(&text) {
            check_round_trip(&selector, &maps)?;
        }
    }

    #[test]
    fn arbitrary_strings_never_panic(text in any::<String>()) {
        if let Ok(selector) = Selector::parse(&text) {
            check_round_trip(&selector, &[])?;
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..64)) {
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(selector) = Selector::parse(&text) {
            check_round_trip(&selector, &[])?;
        }
    }
}

/// Guards the generators: if they stopped producing matches both ways, the evaluation
/// property would pass vacuously.
#[test]
fn generated_label_maps_match_both_ways() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let (mut matched, mut unmatched) = (0, 0);
    for _ in 0..200 {
        let root = expr()
            .new_tree(&mut runner)
            .expect("generate a tree")
            .current();
        let maps = label_maps()
            .new_tree(&mut runner)
            .expect("generate label maps")
            .current();
        let selector = Selector { root };
        for labels in &maps {
            if selector.matches(labels) {
                matched += 1;
            } else {
                unmatched += 1;
            }
        }
    }
    assert!(
        matched > 100 && unmatched > 100,
        "matched {matched}, unmatched {unmatched}"
    );
}

/// Guards the fragment generator: if almost nothing it glues together parses, the
/// round-trip half of that property would pass vacuously.
#[test]
fn glued_fragments_parse_often_enough() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let fragments = vec(select(FRAGMENTS), 0..14);
    let valid = (0..1000)
        .filter(|_| {
            let parts = fragments
                .new_tree(&mut runner)
                .expect("generate fragments")
                .current();
            Selector::parse(&parts.concat()).is_ok()
        })
        .count();
    assert!(valid >= 20, "only {valid} of 1000 glued inputs parse");
}
