//! Every example and quirk of SELECTORS.md, as input → canonical text, input → error
//! position and kind, and rows of the evaluation table.

use std::collections::{BTreeMap, HashMap};

use super::*;

fn canonical(text: &str) -> String {
    match Selector::parse(text) {
        Ok(selector) => selector.canonical(),
        Err(error) => panic!("{text:?} should parse, got: {error}"),
    }
}

fn parse_error(text: &str) -> SelectorError {
    match Selector::parse(text) {
        Ok(selector) => panic!("{text:?} should be rejected, parsed as {selector}"),
        Err(error) => error,
    }
}

/// Asserts each input parses to the given canonical text, and that the canonical text is a
/// fixed point.
fn assert_canonical(cases: &[(&str, &str)]) {
    for &(input, expected) in cases {
        assert_eq!(canonical(input), expected, "canonical form of {input:?}");
        assert_eq!(
            canonical(expected),
            expected,
            "canonical form of canonical {expected:?}"
        );
    }
}

/// Asserts each input is rejected with an error at the given byte.
fn assert_rejected_at(cases: &[(&str, usize)]) {
    for &(input, position) in cases {
        let error = parse_error(input);
        assert_eq!(
            error.position, position,
            "error position for {input:?}: {error}"
        );
    }
}

fn expected_of(text: &str) -> Expected {
    match parse_error(text).kind {
        SelectorErrorKind::Unexpected { expected, .. } => expected,
        other => panic!("{text:?}: expected an Unexpected error, got {other:?}"),
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn matches(selector: &str, pairs: &[(&str, &str)]) -> bool {
    let parsed = Selector::parse(selector).unwrap_or_else(|e| panic!("{selector:?}: {e}"));
    let btree = labels(pairs);
    let hash: HashMap<String, String> = btree.clone().into_iter().collect();
    let result = parsed.matches(&btree);
    assert_eq!(
        parsed.matches(&hash),
        result,
        "{selector:?}: HashMap and BTreeMap disagree"
    );
    result
}

#[test]
fn spec_examples_parse_to_canonical_text() {
    assert_canonical(&[
        (
            "role == 'db' && has(tier)",
            r#"(role == "db" && has(tier))"#,
        ),
        (
            "env in {'prod', 'staging'}",
            r#"env in {"prod", "staging"}"#,
        ),
        ("!has(x)", "!has(x)"),
        ("all()", "all()"),
        ("app starts with 'web'", r#"app starts with "web""#),
        (
            "pcns.team == 'payments' && fedwall.io/cluster != 'local'",
            r#"(pcns.team == "payments" && fedwall.io/cluster != "local")"#,
        ),
    ]);
}

#[test]
fn empty_and_blank_input_is_all() {
    for text in ["", " ", "\t", " \t  \t"] {
        let selector = Selector::parse(text).expect("blank text is all()");
        assert!(selector.is_all(), "{text:?}");
        assert_eq!(selector, Selector::all());
        assert_eq!(selector.canonical(), "all()");
    }
    assert_eq!(Selector::default(), Selector::all());
}

#[test]
fn newlines_and_other_whitespace_are_errors() {
    assert_rejected_at(&[
        ("\n", 0),
        ("has(a)\n", 6),
        ("\nhas(a)", 0),
        ("has(a) \r\n", 7),
        ("has(a)\u{a0}", 6),
        ("\u{b}", 0),
        ("\u{c}", 0),
    ]);
    assert_eq!(
        parse_error("has(a)\n").kind,
        SelectorErrorKind::Unexpected {
            expected: Expected::Token,
            found: Found::Char('\n')
        }
    );
}

#[test]
fn builtins() {
    assert_canonical(&[
        ("all( )", "all()"),
        (" all(\t) ", "all()"),
        ("global()", "global()"),
        ("global(  )", "global()"),
        ("has(a)", "has(a)"),
        ("has( a )", "has(a)"),
        ("has(\ta\t)", "has(a)"),
        ("has(calico/k8s_NS-.1/role)", "has(calico/k8s_NS-.1/role)"),
    ]);
    assert_rejected_at(&[
        ("has()", 4),
        ("has( )", 5),
        ("has(foo", 7),
        ("has( foo ", 9),
        ("has(a b)", 6),
        ("has('a')", 4),
        ("all(", 4),
        ("all(x)", 4),
        ("global(", 7),
    ]);
    assert_eq!(expected_of("has()"), Expected::HasLabel);
    assert_eq!(expected_of("has(foo"), Expected::BuiltinClose("has("));
    assert_eq!(expected_of("all("), Expected::BuiltinClose("all("));
}

#[test]
fn space_before_a_builtins_paren_makes_it_a_label() {
    // `has (a)` is the label `has` followed by `(`, which no operator follows.
    assert_eq!(
        parse_error("has (a)"),
        SelectorError::unexpected(
            4,
            Expected::OperatorAfter {
                label: "has".into()
            },
            Found::Symbol("(")
        )
    );
    assert_rejected_at(&[("all ()", 4), ("global ()", 7)]);
}

#[test]
fn builtin_names_and_operator_words_are_legal_labels() {
    assert_canonical(&[
        ("has == 'x'", r#"has == "x""#),
        ("all == 'x'", r#"all == "x""#),
        ("global != 'x'", r#"global != "x""#),
        ("in == 'x'", r#"in == "x""#),
        ("not == 'x'", r#"not == "x""#),
        ("contains == 'x'", r#"contains == "x""#),
        ("in in {'x'}", r#"in in {"x"}"#),
        ("not not in {}", "not not in {}"),
        ("contains contains 'x'", r#"contains contains "x""#),
        ("starts starts with 'x'", r#"starts starts with "x""#),
        ("has(has)", "has(has)"),
        ("has(in)", "has(in)"),
        ("has(all)", "has(all)"),
        // After `==` the previous token is not a label, so `has(` is a built-in again.
        ("a == 'x' && has(in)", r#"(a == "x" && has(in))"#),
    ]);
}

#[test]
fn label_characters_and_length() {
    assert_canonical(&[
        ("calico/k8s_ns == 'x'", r#"calico/k8s_ns == "x""#),
        ("k8s-app == 'x'", r#"k8s-app == "x""#),
        (
            "calico/k8s_NS-.1/role == 'x'",
            r#"calico/k8s_NS-.1/role == "x""#,
        ),
        ("-a == 'x'", r#"-a == "x""#),
        ("./ == 'x'", r#"./ == "x""#),
        ("0 == 'x'", r#"0 == "x""#),
        ("_ in {}", "_ in {}"),
    ]);
    let longest = "k".repeat(512);
    assert_eq!(
        canonical(&format!("{longest} == 'x'")),
        format!(r#"{longest} == "x""#)
    );
    assert_eq!(
        canonical(&format!("has({longest})")),
        format!("has({longest})")
    );

    let too_long = "k".repeat(513);
    for text in [
        format!("{too_long} == 'x'"),
        format!("has( {too_long})"),
        format!("a == 'x' || {too_long} == 'x'"),
    ] {
        let error = parse_error(&text);
        assert_eq!(
            error.kind,
            SelectorErrorKind::LabelTooLong { length: 513 },
            "{text}"
        );
        assert_eq!(error.position, text.find('k').expect("has a label"));
    }
}

#[test]
fn word_operators() {
    assert_canonical(&[
        ("a contains 'x'", r#"a contains "x""#),
        ("a contains\"v\"", r#"a contains "v""#),
        ("a startswith 'x'", r#"a starts with "x""#),
        ("a starts  with 'x'", r#"a starts with "x""#),
        ("a starts\twith'x'", r#"a starts with "x""#),
        ("a endswith 'x'", r#"a ends with "x""#),
        ("a ends with 'x'", r#"a ends with "x""#),
        ("a notin {'x'}", r#"a not in {"x"}"#),
        ("a not  in {'x'}", r#"a not in {"x"}"#),
        ("a not in{}", "a not in {}"),
        ("a in{'x'}", r#"a in {"x"}"#),
        ("a\tin\t{'x'}", r#"a in {"x"}"#),
    ]);
    assert_rejected_at(&[
        ("a inf {}", 2),
        ("a in", 4),
        ("a startswiths 'x'", 12),
        ("a starts with s 'x'", 14),
        ("a ends wit 'x'", 2),
        ("a squiggles 'x'", 2),
        ("a containsx 'x'", 2),
        ("a IN {}", 2),
        ("a Contains 'x'", 2),
        ("a starts", 2),
        ("a b", 2),
        ("a b == 'x'", 2),
        ("a has(b)", 2),
        ("a all()", 2),
        ("a %", 2),
    ]);
    assert_eq!(
        parse_error("a squiggles 'x'").kind,
        SelectorErrorKind::Unexpected {
            expected: Expected::OperatorAfter { label: "a".into() },
            found: Found::Word("squiggles".into()),
        }
    );
    assert_eq!(
        expected_of("a withs 'x'"),
        Expected::OperatorAfter { label: "a".into() }
    );
    assert_eq!(
        expected_of("a startswiths 'x'"),
        Expected::WordBoundaryAfter("starts with")
    );
}

#[test]
fn not_in_followed_by_a_label_fails_in_the_tokenizer() {
    // Whitespace after the last word is skipped before the boundary check, so the
    // tokenizer sees `x` right after `not in`. `a in x` gets past the tokenizer and fails
    // in the parser instead.
    assert_eq!(
        parse_error("a not in x"),
        SelectorError::unexpected(
            9,
            Expected::WordBoundaryAfter("not in"),
            Found::Word("x".into())
        )
    );
    assert_eq!(
        parse_error("a in x"),
        SelectorError::unexpected(5, Expected::SetAfter("in"), Found::Label("x".into()))
    );
}

#[test]
fn label_followed_by_nothing_fails_in_the_parser() {
    for text in ["a", "a ", "a\t"] {
        assert_eq!(
            parse_error(text),
            SelectorError::unexpected(
                text.len(),
                Expected::OperatorAfter { label: "a".into() },
                Found::EndOfInput
            ),
            "{text:?}"
        );
    }
}

#[test]
fn punctuation() {
    assert_canonical(&[
        ("a!='b'", r#"a != "b""#),
        ("a!= 'b'", r#"a != "b""#),
        ("a=='b'", r#"a == "b""#),
        ("has(a)&&has(b)||has(c)", "((has(a) && has(b)) || has(c))"),
    ]);
    assert_rejected_at(&[
        ("a = 'b'", 2),
        ("a =='b' & has(c)", 8),
        ("has(a) | has(b)", 7),
        ("has(a) &", 7),
        ("a =", 2),
        // Tokenizing finishes before parsing starts, so the lone `=` is reported.
        ("a ! = 'b'", 4),
        // `!=` is always one token, even where a `!` was meant.
        ("!=has(a)", 0),
        ("a !in {}", 2),
        ("a == 'x' %", 9),
    ]);
    assert_eq!(
        parse_error("a = 'b'").kind,
        SelectorErrorKind::Unexpected {
            expected: Expected::Doubled('='),
            found: Found::Lone('=')
        }
    );
    assert_eq!(
        parse_error("!=has(a)").kind,
        SelectorErrorKind::Unexpected {
            expected: Expected::Term,
            found: Found::Symbol("!=")
        }
    );
}

#[test]
fn string_literals() {
    assert_canonical(&[
        ("a == ''", r#"a == """#),
        ("a == \"\"", r#"a == """#),
        // A literal holds the other quote kind; canonical text uses `'` only when the
        // value contains `"`.
        ("a == '\"'", r#"a == '"'"#),
        ("a == \"'\"", r#"a == "'""#),
        ("a == 'x\"y'", r#"a == 'x"y'"#),
        ("a == \"it's\"", r#"a == "it's""#),
        // No escapes: a backslash is an ordinary byte, and does not escape the quote.
        (r#"a == "\""#, r#"a == "\""#),
        (r"a == '\n\'", r#"a == "\n\""#),
        // Any byte, including newline, tab and non-ASCII.
        ("a == \"x\ny\"", "a == \"x\ny\""),
        ("a == '\t'", "a == \"\t\""),
        ("a == 'é→'", "a == \"é→\""),
        (
            "a == '&& || ( ) { } , ! has(x)'",
            r#"a == "&& || ( ) { } , ! has(x)""#,
        ),
    ]);
    assert_rejected_at(&[
        ("\"FOO'", 0),
        ("a == 'x", 5),
        ("a == \"x'", 5),
        (r#"a == "\"""#, 8),
    ]);
    assert_eq!(
        parse_error("\"FOO'").kind,
        SelectorErrorKind::UnterminatedString { quote: '"' }
    );
}

#[test]
fn right_hand_side_must_be_a_string_and_left_a_label() {
    assert_eq!(
        parse_error("app == b").to_string(),
        "invalid selector at byte 7: expected a string literal after '==', found label 'b'"
    );
    assert_rejected_at(&[
        ("b == b", 5),
        ("a != has(b)", 5),
        ("a contains", 10),
        ("a starts with b", 14),
        ("a ends with all()", 12),
        ("'b1' == b", 0),
        ("'b1'", 0),
        ("a == 'x' == 'y'", 9),
    ]);
    assert_eq!(expected_of("'b1' == b"), Expected::Term);
    assert_eq!(expected_of("a == 'x' == 'y'"), Expected::End);
}

#[test]
fn sets() {
    assert_canonical(&[
        ("a in {}", "a in {}"),
        ("a not in {}", "a not in {}"),
        ("a in { }", "a in {}"),
        ("a in {\"a\",}", r#"a in {"a"}"#),
        ("a in {'b', 'a', 'b', 'a'}", r#"a in {"a", "b"}"#),
        // Byte order: uppercase before `_` before lowercase before non-ASCII.
        (
            "a in {'b', 'é', 'B', 'a', '_', ''}",
            r#"a in {"", "B", "_", "a", "b", "é"}"#,
        ),
        ("a not in {'y','x'}", r#"a not in {"x", "y"}"#),
        // Each item is quoted by the same rule as a single value.
        ("a in {\"'\", '\"'}", r#"a in {'"', "'"}"#),
    ]);
    assert_rejected_at(&[
        ("a in {,}", 6),
        ("a in {\"a\" \"b\"}", 10),
        ("a in {\"a\",,\"b\"}", 10),
        ("a in \"x\"", 5),
        ("a in {", 6),
        ("a in {'a'", 9),
        ("a in {'a',", 10),
        ("a in {b}", 6),
        ("a in ('a')", 5),
        ("a not in 'a'", 9),
    ]);
    assert_eq!(expected_of("a in {,}"), Expected::SetItemOrClose);
    assert_eq!(expected_of("a in {'a' 'b'}"), Expected::CommaOrClose);
    assert_eq!(expected_of("a in 'x'"), Expected::SetAfter("in"));
}

#[test]
fn negation_parity() {
    assert_canonical(&[
        ("!has(a)", "!has(a)"),
        ("!!has(a)", "has(a)"),
        ("!!!has(a)", "!has(a)"),
        ("!! ! has(a)", "!has(a)"),
        ("! !!has(a)", "!has(a)"),
        ("!\t!has(a)", "has(a)"),
        // `!` applies to one primary.
        ("!a == \"x\"", r#"!a == "x""#),
        ("!a == 'a1' && b == 'b1'", r#"(!a == "a1" && b == "b1")"#),
        ("!(has(a) && has(b))", "!(has(a) && has(b))"),
        (
            "!(has(a) || has(b)) && has(c)",
            "(!(has(a) || has(b)) && has(c))",
        ),
        ("!all()", "!all()"),
        ("!global()", "!global()"),
        ("!a in {}", "!a in {}"),
    ]);
    let many = format!("{}has(a)", "!".repeat(10_001));
    assert_eq!(canonical(&many), "!has(a)");
    assert_rejected_at(&[("!", 1), ("! ", 2), ("!!", 2), ("has(a) && !", 11)]);
}

#[test]
fn negating_a_negated_group_cancels() {
    // Calico prints `!(!x)` as `!!x`, which parses back as `x`; keeping one canonical
    // form per selector (SELECTORS.md §4: canonicalising twice changes nothing) needs the
    // two negations to cancel when parsed.
    assert_canonical(&[
        ("!(!has(a))", "has(a)"),
        ("!(!!has(a))", "!has(a)"),
        ("!((!has(a)))", "has(a)"),
        ("!!(!has(a))", "!has(a)"),
        ("!(!(has(a) && has(b)))", "(has(a) && has(b))"),
        ("!(!has(a) && has(b))", "!(!has(a) && has(b))"),
    ]);
    assert_eq!(
        Selector::parse("!(!has(a))").ok(),
        Selector::parse("has(a)").ok()
    );
}

#[test]
fn grouping_and_precedence() {
    assert_canonical(&[
        ("(a == 'x')", r#"a == "x""#),
        ("((has(a)))", "has(a)"),
        ("( has(a) )", "has(a)"),
        ("(a == 'x' && b == 'y')", r#"(a == "x" && b == "y")"#),
        ("has(a) && has(b) && has(c)", "(has(a) && has(b) && has(c))"),
        ("has(a) || has(b) || has(c)", "(has(a) || has(b) || has(c))"),
        (
            "has(a) || has(b) && has(c)",
            "(has(a) || (has(b) && has(c)))",
        ),
        (
            "has(a) && has(b) || has(c)",
            "((has(a) && has(b)) || has(c))",
        ),
        (
            "(has(a) && has(b)) && has(c)",
            "((has(a) && has(b)) && has(c))",
        ),
        (
            "has(a) && (has(b) && has(c))",
            "(has(a) && (has(b) && has(c)))",
        ),
        (
            "(has(a) || has(b)) && has(c)",
            "((has(a) || has(b)) && has(c))",
        ),
        ("((has(a) || has(b)))", "(has(a) || has(b))"),
        (
            "a == 'x' && (b == 'y' || c == 'z')",
            r#"(a == "x" && (b == "y" || c == "z"))"#,
        ),
        ("(all()) || global()", "(all() || global())"),
    ]);
}

#[test]
fn malformed_structure_is_rejected() {
    assert_rejected_at(&[
        ("()", 1),
        ("(", 1),
        (")", 0),
        ("(has(a)", 7),
        ("has(a))", 6),
        ("(has(a) has(b))", 8),
        ("&&", 0),
        ("||", 0),
        ("has(a) &&", 9),
        ("has(a) ||", 9),
        ("&& has(a)", 0),
        ("|| has(a)", 0),
        ("has(a) && || has(b)", 10),
        ("has(a) has(b)", 7),
        ("all() all()", 6),
        ("has(a) in {}", 7),
        ("a == 'x' b == 'y'", 9),
        ("{}", 0),
        (",", 0),
    ]);
    assert_eq!(expected_of("(has(a)"), Expected::CloseParen { open: 0 });
    assert_eq!(expected_of("has(a))"), Expected::End);
    assert_eq!(expected_of("()"), Expected::Term);
}

#[test]
fn nesting_is_limited_instead_of_overflowing_the_stack() {
    let nested = |depth: usize| format!("{}has(a){}", "(".repeat(depth), ")".repeat(depth));
    assert_eq!(canonical(&nested(MAX_NESTING)), "has(a)");
    let too_deep = nested(MAX_NESTING + 1);
    assert_eq!(
        parse_error(&too_deep),
        SelectorError {
            position: MAX_NESTING,
            kind: SelectorErrorKind::NestedTooDeep
        }
    );
    let hostile = "(".repeat(1_000_000);
    assert_eq!(parse_error(&hostile).kind, SelectorErrorKind::NestedTooDeep);
    // Long flat expressions are loops, not recursion.
    let wide = vec!["has(a)"; 50_000].join(" && ");
    assert!(Selector::parse(&wide).is_ok());
}

#[test]
fn error_messages_name_what_was_expected_and_found() {
    let cases = [
        (
            "a == 'x' && ",
            "invalid selector at byte 12: expected a label comparison, has(label), all(), global(), '!' or '(' (an empty selector is written all()), found the end of the selector",
        ),
        (
            "a b",
            "invalid selector at byte 2: expected an operator after label 'a' (==, !=, in, not in, contains, starts with, ends with; operators are lowercase), found 'b'",
        ),
        (
            "has(a)\n",
            "invalid selector at byte 6: expected a label, a quoted string, one of ( ) { } , or an operator (== != ! && ||), found a newline (selectors are one line)",
        ),
        (
            "é",
            "invalid selector at byte 0: expected a label, a quoted string, one of ( ) { } , or an operator (== != ! && ||), found non-ASCII character 'é' (U+00E9)",
        ),
        (
            "a == 'x",
            "invalid selector at byte 5: the string literal opened with ' is never closed (literals have no escapes; quote a value containing ' with the other quote kind)",
        ),
        (
            "(has(a) x",
            "invalid selector at byte 8: expected '&&', '||' or ')' to close the '(' at byte 0, found label 'x'",
        ),
        (
            "a in {'x' 'y'}",
            "invalid selector at byte 10: expected ',' or '}' after a set item, found string literal \"y\"",
        ),
        (
            "a == 'x' | has(b)",
            "invalid selector at byte 9: expected '||', found a lone '|'",
        ),
    ];
    for (input, message) in cases {
        assert_eq!(parse_error(input).to_string(), message, "{input:?}");
    }
    let long = format!("a == 'x' {}", "y".repeat(500));
    let message = parse_error(&long).to_string();
    assert!(
        message.len() < 200,
        "a long label is not echoed whole: {message}"
    );
}

#[test]
fn evaluation_table() {
    // has(k)
    assert!(!matches("has(k)", &[]));
    assert!(matches("has(k)", &[("k", "")]));
    assert!(matches("has(k)", &[("k", "v")]));
    assert!(!matches("has(k)", &[("K", "v")]));
    // ==
    assert!(!matches("k == 'v'", &[]));
    assert!(matches("k == 'v'", &[("k", "v")]));
    assert!(!matches("k == 'v'", &[("k", "V")]));
    assert!(!matches("k == 'v'", &[("k", "vv")]));
    assert!(matches("k == ''", &[("k", "")]));
    assert!(!matches("k == ''", &[]));
    // != is true when the label is absent.
    assert!(matches("k != 'v'", &[]));
    assert!(!matches("k != 'v'", &[("k", "v")]));
    assert!(matches("k != 'v'", &[("k", "w")]));
    assert!(matches("k != ''", &[]));
    // in
    assert!(!matches("k in {'a', 'b'}", &[]));
    assert!(matches("k in {'a', 'b'}", &[("k", "b")]));
    assert!(!matches("k in {'a', 'b'}", &[("k", "c")]));
    assert!(!matches("k in {}", &[("k", "")]));
    assert!(!matches("k in {}", &[]));
    assert!(matches("k in {''}", &[("k", "")]));
    // not in is true when the label is absent.
    assert!(matches("k not in {'a', 'b'}", &[]));
    assert!(!matches("k not in {'a', 'b'}", &[("k", "a")]));
    assert!(matches("k not in {'a', 'b'}", &[("k", "c")]));
    assert!(matches("k not in {}", &[("k", "")]));
    assert!(matches("k not in {}", &[]));
    // contains / starts with / ends with, byte-wise.
    for (selector, value, expected) in [
        ("k contains 'ell'", "hello", true),
        ("k contains 'ELL'", "hello", false),
        ("k contains ''", "", true),
        ("k contains 'é'", "café!", true),
        ("k starts with 'he'", "hello", true),
        ("k starts with 'lo'", "hello", false),
        ("k starts with 'hello!'", "hello", false),
        ("k starts with ''", "", true),
        ("k ends with 'lo'", "hello", true),
        ("k ends with 'he'", "hello", false),
        ("k ends with ''", "x", true),
    ] {
        assert_eq!(
            matches(selector, &[("k", value)]),
            expected,
            "{selector} on k={value:?}"
        );
        assert!(!matches(selector, &[]), "{selector} on absent k");
    }
    // all(), global() and the empty selector always match.
    for selector in ["all()", "global()", "", "  "] {
        assert!(matches(selector, &[]));
        assert!(matches(selector, &[("k", "v")]));
    }
    assert!(!matches("!all()", &[]));
}

#[test]
fn boolean_operators() {
    let both = &[("a", "1"), ("b", "2")];
    let only_a = &[("a", "1")];
    assert!(matches("has(a) && has(b)", both));
    assert!(!matches("has(a) && has(b)", only_a));
    assert!(matches("has(a) || has(b)", only_a));
    assert!(!matches("has(a) || has(b)", &[]));
    assert!(matches("!has(b)", only_a));
    assert!(!matches("!has(a)", only_a));
    assert!(matches("!a == '2'", only_a));
    assert!(matches("!a == '2'", &[]));
    assert!(!matches("!a != '2'", &[]));
    assert!(matches("!(has(a) && has(b))", only_a));
    assert!(matches("has(x) || has(y) || a == '1'", only_a));
    assert!(!matches("has(a) && b == '2' && has(c)", both));
}

/// A label view that overlays one map on another without merging them, as a namespace
/// selector evaluated against pod + namespace labels would.
struct Overlay<'a> {
    top: &'a BTreeMap<String, String>,
    bottom: &'a HashMap<String, String>,
}

impl Labels for Overlay<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.top
            .get(key)
            .or_else(|| self.bottom.get(key))
            .map(String::as_str)
    }
}

#[test]
fn labels_trait_accepts_composite_views_and_references() {
    let top = labels(&[("app", "web")]);
    let bottom: HashMap<String, String> = [
        ("team".to_owned(), "payments".to_owned()),
        ("app".to_owned(), "db".to_owned()),
    ]
    .into();
    let view = Overlay {
        top: &top,
        bottom: &bottom,
    };
    let selector = Selector::parse("app == 'web' && team == 'payments'").expect("valid");
    assert!(selector.matches(&view));
    assert!(selector.matches(&&view));
    let dynamic: &dyn Labels = &view;
    assert!(selector.matches(dynamic));
    assert!(!selector.matches(&top));
}

#[test]
fn unique_ids_match_independently_computed_values() {
    // Computed with Python's hashlib/base64, not with this code:
    // 's:' + urlsafe_b64encode(sha224(('s:' + canonical).encode()).digest()).rstrip('=')
    assert_eq!(
        Selector::all().unique_id(),
        "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"
    );
    assert_eq!(
        Selector::parse(" global( ) ").expect("valid").unique_id(),
        "s:fiJDJdBoaP_zQxty70sMjIrxwAb5lgM6LYCAow"
    );
    assert_eq!(
        Selector::parse("role == 'db' && has(tier)")
            .expect("valid")
            .unique_id(),
        "s:IaCOIhjEdbQ1e854_QnNs4NEpbq5zrl0ikeZ5w"
    );
    assert_eq!(
        Selector::parse("").expect("valid").unique_id(),
        Selector::all().unique_id()
    );
}

#[test]
fn label_keys_lists_each_key_read_once_in_byte_order() {
    let selector =
        Selector::parse("b == 'x' && (has(a) || b in {}) && !c != 'y' && d not in {'z'} && all()")
            .expect("valid");
    assert_eq!(selector.label_keys(), ["a", "b", "c", "d"]);
    assert!(Selector::all().label_keys().is_empty());
    assert!(
        Selector::parse("global()")
            .expect("valid")
            .label_keys()
            .is_empty()
    );
    assert!(!Selector::parse("global()").expect("valid").is_all());
    assert!(!Selector::parse("has(a)").expect("valid").is_all());
}

#[test]
fn from_str_display_and_expr_agree_with_parse() {
    let text = "env in {'prod', 'staging'} || !has(x)";
    let parsed: Selector = text.parse().expect("valid");
    assert_eq!(parsed, Selector::parse(text).expect("valid"));
    assert_eq!(parsed.to_string(), parsed.canonical());
    let Expr::Or(operands) = parsed.expr() else {
        panic!("expected an Or node, got {:?}", parsed.expr());
    };
    let Expr::In { label, values } = &operands[0] else {
        panic!("expected an In node, got {:?}", operands[0]);
    };
    assert_eq!(&**label, "env");
    assert_eq!(values.iter().collect::<Vec<_>>(), ["prod", "staging"]);
    assert!(values.contains("prod") && !values.contains("dev"));
    assert_eq!(values.len(), 2);
}

#[test]
fn label_prefix_rewrites_every_key_like_calicos_prefix_visitor() {
    let selector = Selector::parse("team == 'a' && !has(x) || k in {'v'}").expect("valid");
    assert_eq!(
        selector.with_label_prefix("pcns.").canonical(),
        r#"((pcns.team == "a" && !has(pcns.x)) || pcns.k in {"v"})"#
    );
}

#[test]
fn and_composes_like_calico_and_drops_all() {
    let a = Selector::parse("a == 'x'").expect("valid");
    let b = Selector::parse("b == 'y' || c == 'z'").expect("valid");
    assert_eq!(
        a.and(&b).canonical(),
        r#"(a == "x" && (b == "y" || c == "z"))"#
    );
    assert_eq!(Selector::all().and(&a), a);
    assert_eq!(a.and(&Selector::all()), a);
    assert_eq!(super::quote_literal("it's"), Some(r#""it's""#.to_owned()));
    assert_eq!(super::quote_literal(r#"a"b'c"#), None);
}
