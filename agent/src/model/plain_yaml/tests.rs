//! The reader answers exactly as serde_yaml does wherever it answers, and answers for the
//! manifests fedwall and kubectl write.

use proptest::prelude::*;
use serde_yaml::Value;

use super::from_str;
use crate::model::resources::{InOrder, Resource};

/// What serde_yaml makes of `text`, where the reader makes anything of it.
fn assert_agrees<T>(text: &str) -> Option<T>
where
    T: serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let fast = from_str::<T>(text)?;
    let slow = serde_yaml::from_str::<T>(text);
    assert_eq!(
        Some(&fast),
        slow.as_ref().ok(),
        "the reader and serde_yaml differ on {text:?} (serde_yaml: {slow:?})"
    );
    Some(fast)
}

const POD: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: web-0   # a comment after a value
  namespace: prod
  labels:
    app: web
    version: '2'
    canary: 'true'
    empty: ''
    \"quoted key\": \"a \\\"quoted\\\" value\"
    it: 'it''s'
# a comment line at column 0
spec:
  nodeName: node-1
  hostNetwork: false
  containers:
  - name: web
    ports:
    -   containerPort: 8080
        name: http
    - containerPort: 53
      protocol: UDP
  -
    name: sidecar
status:
  podIP: 10.0.0.5
  podIPs:
  - ip: 10.0.0.5
  - ip: fd00::5
";

#[test]
fn a_pod_in_block_yaml_is_read_as_serde_yaml_reads_it() {
    let InOrder(pod) = assert_agrees::<InOrder>(POD).expect("the reader reads a block pod");
    let Resource::Pod(pod) = pod else {
        panic!("a pod, not {pod:?}")
    };
    let labels = &pod.metadata.labels;
    assert_eq!(labels["version"], "2");
    assert_eq!(labels["canary"], "true");
    assert_eq!(labels["quoted key"], "a \"quoted\" value");
    assert_eq!(labels["it"], "it's");
    assert_eq!(pod.spec.containers[0].ports[0].container_port, 8080);
    assert_eq!(pod.spec.containers[1].name, "sidecar");
    assert_eq!(pod.status.pod_ips[1].ip, "fd00::5");
    // As an untyped value, the addresses are left to serde_yaml: `10.0.0.5` holds only
    // characters a number may hold.
    assert_agrees::<Value>(POD);
    let crlf = POD.replace('\n', "\r\n");
    assert_agrees::<InOrder>(&crlf).expect("with CRLF line ends");
}

#[test]
fn what_fedwall_writes_is_read_by_the_reader() {
    let labels = [
        "app: web",
        "n: '1'",
        "t: 'true'",
        "nul: 'null'",
        "z: '007'",
        "e: ''",
    ];
    let text = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: n\n  labels:\n{}\
         spec:\n  nodeName: n1\nstatus:\n  podIP: 10.1.0.1\n",
        labels.map(|l| format!("    {l}\n")).concat()
    );
    let InOrder(pod) = from_str::<InOrder>(&text).expect("the reader reads it");
    let manifest = pod.to_manifest().expect("serializes");
    let InOrder(again) = assert_agrees::<InOrder>(&manifest)
        .unwrap_or_else(|| panic!("the reader reads what to_manifest writes:\n{manifest}"));
    assert_eq!(again, pod);
}

#[test]
fn what_is_outside_the_subset_is_left_to_serde_yaml() {
    let outside = [
        "a: &x 1\nb: *x\n",
        "a: !!str 1\n",
        "a: |\n  text\n",
        "a: >\n  text\n",
        "a: [1, 2]\n",
        "a: {b: 1}\n",
        "a: plain\n  continued\n",
        "a: \"two\n  lines\"\n",
        "a: \"\\x41\"\n",
        "a: 0x1F\n",
        "a: 1.5\n",
        "a: .inf\n",
        "a: 007\n",
        "a:\tb\n",
        "a: caf\u{e9}\n",
        "? a\n: b\n",
        "a: b: c\n",
        " a: 1\n",
        "- - a\n",
        "a: 1\n  b: 2\n",
        "a:b\n",
    ];
    for text in outside {
        assert_eq!(from_str::<Value>(text), None, "{text:?}");
    }
}

#[test]
fn a_visitor_that_rejects_a_value_leaves_the_document_to_serde_yaml() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  \
                - name: c\n    ports:\n    - containerPort: http\n";
    assert!(from_str::<InOrder>(text).is_none());
    assert!(serde_yaml::from_str::<InOrder>(text).is_err());
}

/// Scalars as they might be written in a value, tricky ones included: every typing rule
/// serde_yaml applies (null, booleans, integers in every base, floats, leading zeros) and
/// every way a scalar can leave the subset.
const SCALARS: &[&str] = &[
    "web",
    "app1",
    "a b  c",
    "it's",
    "a#b",
    "a #comment",
    "a:b",
    "http://x:80/y",
    "-x",
    "10.0.0.1",
    "10.0.0.0/8",
    "fd00::1",
    "8080:8090",
    "80",
    "0",
    "-1",
    "-0",
    "+5",
    "+0",
    "007",
    "0x1F",
    "0o17",
    "0b11",
    "-0x1F",
    "1e3",
    "1.5",
    "0.",
    ".5",
    ".inf",
    "-.inf",
    ".NaN",
    "inf",
    "nan",
    "Infinity",
    "1_000",
    "99999999999999999999",
    "-9223372036854775809",
    "true",
    "True",
    "TRUE",
    "false",
    "yes",
    "no",
    "on",
    "null",
    "Null",
    "NULL",
    "~",
    "",
    "1:20",
    "1.0",
    "-2.5",
    "7.",
    "1e400",
    "a: b",
    "a:",
    "&anchor x",
    "*alias",
    "!tag x",
    "|",
    ">",
    "[a, b]",
    "{a: 1}",
    "{}",
    "[]",
    "{ }",
    "'single'",
    "'it''s'",
    "''",
    "'1'",
    "\"dq\"",
    "\"esc\\\"q\"",
    "\"tab\\tx\"",
    "\"\\x41\"",
    "\"\"",
    "\"true\"",
    "'unterminated",
    "\"a\" b",
    "'a'#c",
    "@x",
    "`x",
    "%x",
    "? x",
    "- x",
    "-",
    "a\tb",
    "caf\u{e9}",
    "a # b: c",
];

const IN_SUBSET: &[&str] = &[
    "web",
    "a b  c",
    "it's",
    "a#b",
    "a #comment",
    "a:b",
    "80",
    "0",
    "-1",
    "true",
    "FALSE",
    "yes",
    "null",
    "~",
    "",
    "'1'",
    "'it''s'",
    "\"esc\\\"q\"",
    "{}",
    "[]",
    "inf",
    "1_000",
    "10.0.0.0/8",
];

const KEYS: &[&str] = &[
    "name",
    "labels",
    "app",
    "a b",
    "\"quoted key\"",
    "'sq'",
    "x:y",
    "1",
    "true",
    "null",
    "~",
    "-k",
    "\"\"",
    "k #c",
    "[k]",
];

#[derive(Clone, Debug)]
enum Node {
    Scalar(&'static str),
    Map(Vec<(&'static str, Node)>),
    Seq(Vec<Node>),
}

fn node() -> impl Strategy<Value = Node> {
    // Mostly scalars the reader reads, so that most documents are compared, not left out.
    let leaf = prop_oneof![
        4 => prop::sample::select(IN_SUBSET),
        1 => prop::sample::select(SCALARS),
    ]
    .prop_map(Node::Scalar);
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec((prop::sample::select(KEYS), inner.clone()), 0..4)
                .prop_map(Node::Map),
            prop::collection::vec(inner, 0..4).prop_map(Node::Seq),
        ]
    })
}

/// How a block document is laid out: the choices YAML leaves to its author.
#[derive(Clone, Debug)]
struct Layout {
    step: usize,
    dash_spaces: usize,
    sequence_under_key_indented: bool,
    comments: bool,
}

fn layout() -> impl Strategy<Value = Layout> {
    (2..5usize, 1..4usize, any::<bool>(), any::<bool>()).prop_map(
        |(step, dash_spaces, sequence_under_key_indented, comments)| Layout {
            step,
            dash_spaces,
            sequence_under_key_indented,
            comments,
        },
    )
}

/// Writes `node` as the value after a `key:` or `-` whose line is indented `indent`.
fn write_value(out: &mut String, node: &Node, indent: usize, under_key: bool, layout: &Layout) {
    match node {
        Node::Scalar(s) => {
            out.push(' ');
            out.push_str(s);
            out.push('\n');
        }
        Node::Map(entries) if entries.is_empty() => out.push_str(" {}\n"),
        Node::Seq(items) if items.is_empty() => out.push_str(" []\n"),
        Node::Map(_) => {
            out.push('\n');
            write_block(out, node, indent + layout.step, layout);
        }
        Node::Seq(_) => {
            out.push('\n');
            let nested = if under_key && !layout.sequence_under_key_indented {
                indent
            } else {
                indent + layout.step
            };
            write_block(out, node, nested, layout);
        }
    }
}

fn write_block(out: &mut String, node: &Node, indent: usize, layout: &Layout) {
    let pad = " ".repeat(indent);
    match node {
        Node::Map(entries) => {
            for (key, value) in entries {
                if layout.comments {
                    out.push_str(&format!("{pad}# about {key}\n\n"));
                }
                out.push_str(&format!("{pad}{key}:"));
                write_value(out, value, indent, true, layout);
            }
        }
        Node::Seq(items) => {
            for item in items {
                let dash = format!("{pad}-{}", " ".repeat(layout.dash_spaces));
                match item {
                    Node::Map(entries) if !entries.is_empty() => {
                        // The first entry on the dash's line, the rest at its column.
                        let column = indent + 1 + layout.dash_spaces;
                        let mut inner = String::new();
                        write_block(&mut inner, item, column, layout);
                        out.push_str(&dash);
                        out.push_str(&inner[column..]);
                    }
                    _ => {
                        out.push_str(&format!("{pad}-"));
                        write_value(out, item, indent, false, layout);
                    }
                }
            }
        }
        Node::Scalar(_) => unreachable!("a block is a map or a sequence"),
    }
}

/// A pod whose label values, port and host network flag are drawn from [`SCALARS`].
fn pod_text(name: &str, labels: &[&str], port: &str, host_network: &str) -> String {
    let labels: String = labels
        .iter()
        .enumerate()
        .map(|(i, value)| format!("    l{i}: {value}\n"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels:\n{labels}spec:\n  \
         hostNetwork: {host_network}\n  containers:\n  - name: c\n    ports:\n    \
         - containerPort: {port}\nstatus:\n  podIP: 10.0.0.1\n"
    )
}

/// A policy whose order, action, protocol, ports, IP version and ICMP type are drawn from
/// [`SCALARS`]: floats, integers, untagged integer-or-string values.
fn policy_text(order: &str, action: &str, protocol: &str, ports: &[&str], small: &str) -> String {
    let ports: String = ports.iter().map(|p| format!("      - {p}\n")).collect();
    format!(
        "apiVersion: fedwall.io/v1alpha1\nkind: GlobalNetworkPolicy\nmetadata:\n  name: p\n\
         spec:\n  order: {order}\n  selector: app == 'web'\n  ingress:\n  - action: {action}\n    \
         protocol: {protocol}\n    ipVersion: {small}\n    icmp:\n      type: {small}\n    \
         destination:\n      ports:\n{ports}"
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn any_block_document_is_read_as_serde_yaml_reads_it_or_left_to_it(
        root in prop::collection::vec((prop::sample::select(KEYS), node()), 1..5),
        layout in layout(),
        crlf in any::<bool>(),
    ) {
        let mut text = String::new();
        write_block(&mut text, &Node::Map(root), 0, &layout);
        if crlf {
            text = text.replace('\n', "\r\n");
        }
        assert_agrees::<Value>(&text);
    }

    #[test]
    fn any_pod_is_read_as_serde_yaml_reads_it_or_left_to_it(
        name in prop::sample::select(SCALARS),
        labels in prop::collection::vec(prop::sample::select(SCALARS), 0..6),
        port in prop::sample::select(SCALARS),
        host_network in prop::sample::select(SCALARS),
    ) {
        let text = pod_text(name, &labels, port, host_network);
        assert_agrees::<InOrder>(&text);
        assert_agrees::<Value>(&text);
    }

    #[test]
    fn any_policy_is_read_as_serde_yaml_reads_it_or_left_to_it(
        order in prop::sample::select(SCALARS),
        action in prop::sample::select(SCALARS),
        protocol in prop::sample::select(SCALARS),
        ports in prop::collection::vec(prop::sample::select(SCALARS), 0..4),
        small in prop::sample::select(SCALARS),
    ) {
        let text = policy_text(order, action, protocol, &ports, small);
        assert_agrees::<InOrder>(&text);
    }
}

/// The cases above must not pass by leaving everything to serde_yaml: documents of plain
/// names, quoted strings, booleans and decimal integers are read by the reader itself.
#[test]
fn the_reader_reads_documents_in_the_subset_itself() {
    let plain = [
        "web",
        "'1'",
        "\"dq\"",
        "true",
        "80",
        "-1",
        "~",
        "",
        "a #c",
        "10.0.0.0/8",
    ];
    for value in plain {
        let text = pod_text("p", &[value, "x"], "80", "false");
        assert!(from_str::<InOrder>(&text).is_some(), "{text}");
        let text = policy_text("7.5", "Allow", "TCP", &["80", "'http'", "8080:8090"], "4");
        assert!(assert_agrees::<InOrder>(&text).is_some(), "{text}");
        let text = format!("a: {value}\nb:\n- {value}\n-\n  c: {value}\n");
        assert!(assert_agrees::<Value>(&text).is_some(), "{text}");
    }
}

/// The agent bench's documents, as the file datastore cuts them from their files: from
/// just after a `---` marker.
#[test]
fn the_agent_benchs_documents_are_read_by_the_reader() {
    use crate::bench::{policy, remote_pod};
    for resource in [remote_pod(1234, 56), policy(7)] {
        let manifest = resource.to_manifest().expect("serializes");
        let text = format!("\n{manifest}");
        let InOrder(read) =
            from_str::<InOrder>(&text).unwrap_or_else(|| panic!("the reader reads\n{manifest}"));
        assert_eq!(read, resource);
    }
}
