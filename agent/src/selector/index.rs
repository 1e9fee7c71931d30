//! An incremental index answering "which endpoints match selector S" (and the reverse) for
//! calc: endpoints and selectors come and go one at a time, and each change reports only
//! the (selector, endpoint) pairs that started or stopped matching.
//!
//! Two inverted indexes keep the work per change proportional to what the change can affect:
//! - endpoint side, label key → value → endpoints: a new selector that requires a positive
//!   term (`k == "v"`, `k in {…}`, `has(k)`, alone or inside `&&`) is evaluated only
//!   against the endpoints satisfying its most selective such term;
//! - selector side, a selector is filed under its *guard* (one positive term it requires)
//!   or, when it has none, under every label key it reads: a relabelled endpoint
//!   re-evaluates only selectors that read a changed key and either matched it before or
//!   could match it now.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::hash::Hash;

use foldhash::{HashMap, HashMapExt as _, HashSet};

use super::label_set::{LabelSet, LabelStrings};
use super::{Expr, Labels, Selector, StringSet};

/// What an endpoint or selector id must be: hashed for the indexes, ordered so that
/// changes come out in a deterministic order.
pub trait IndexKey: Clone + Eq + Hash + Ord + Debug {}

impl<T: Clone + Eq + Hash + Ord + Debug> IndexKey for T {}

/// An endpoint's labels as the index takes them (it stores them as a [`LabelSet`]).
pub type EndpointLabels = BTreeMap<String, String>;

/// A (selector, endpoint) pair that started or stopped matching.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MatchChange<E, S> {
    Started { selector: S, endpoint: E },
    Stopped { selector: S, endpoint: E },
}

/// Which endpoints each selector matches, kept up to date one change at a time.
///
/// Every mutating method appends to `out` exactly the pairs whose match state changed:
/// no duplicates, and nothing for a change that leaves every match as it was.
#[derive(Debug)]
pub struct LabelIndex<E, S> {
    endpoints: HashMap<E, EndpointEntry<S>>,
    selectors: HashMap<S, SelectorEntry<E>>,
    /// Label key → value → endpoints carrying that pair: the candidates for a new selector.
    /// Only for keys some selector reads, since only those can narrow a selector's
    /// candidates: at 100,000 endpoints, postings of every key (`projectcalico.org/*`,
    /// `fedwall.io/cluster`: 100,000-member sets) were half of adding an endpoint.
    endpoints_by_label: HashMap<Box<str>, LabelPostings<E>>,
    /// How many selectors read each key: the keys `endpoints_by_label` covers.
    read_keys: HashMap<Box<str>, usize>,
    /// Selectors whose guard is `k == v` or `k in {…, v, …}`, by `k` then `v`.
    guarded_by_value: HashMap<Box<str>, HashMap<Box<str>, BTreeSet<S>>>,
    /// Selectors whose guard is `has(k)`, by `k`.
    guarded_by_key: HashMap<Box<str>, BTreeSet<S>>,
    /// Selectors without a guard, under every key they read. A guarded selector is not
    /// listed here: it can only start matching an endpoint that satisfies its guard, and
    /// the guard indexes find those.
    unguarded_readers: HashMap<Box<str>, BTreeSet<S>>,
    /// Unguarded selectors that match an endpoint without labels (`all()`, `!has(x)`,
    /// `k != "v"`): they match every endpoint that has none of the keys they read, so a
    /// new endpoint starts from this set instead of evaluating them.
    unguarded_matching_empty: BTreeSet<S>,
    /// The strings of every endpoint's labels, shared.
    strings: LabelStrings,
}

/// One per endpoint (100,000s), so kept small: a few selectors match each.
#[derive(Debug)]
struct EndpointEntry<S> {
    labels: LabelSet,
    /// Sorted.
    matches: Vec<S>,
}

#[derive(Debug)]
struct SelectorEntry<E> {
    selector: Selector,
    /// `selector.label_keys()`, sorted, kept to test "does it read a changed key" cheaply.
    keys: Box<[Box<str>]>,
    guard: Option<Guard>,
    matches: BTreeSet<E>,
}

/// One positive term a selector requires: no endpoint failing it can match.
#[derive(Debug, Clone)]
enum Guard {
    /// `label == v` (one value) or `label in {values}`.
    Values {
        label: Box<str>,
        values: Box<[Box<str>]>,
    },
    /// `has(label)`.
    Has { label: Box<str> },
}

/// A required positive term, borrowed from a selector's tree.
#[derive(Debug, Clone, Copy)]
enum Term<'a> {
    Equal(&'a str, &'a str),
    In(&'a str, &'a StringSet),
    Has(&'a str),
}

#[derive(Debug)]
struct LabelPostings<E> {
    /// Endpoints carrying the key at all, the candidate count of `has(key)`.
    endpoints: usize,
    by_value: HashMap<Box<str>, HashSet<E>>,
}

/// The labels of an endpoint that has none, to evaluate selectors without allocating.
struct NoLabels;

impl Labels for NoLabels {
    fn get(&self, _key: &str) -> Option<&str> {
        None
    }
}

impl<E, S> Default for LabelIndex<E, S> {
    fn default() -> Self {
        LabelIndex {
            endpoints: HashMap::new(),
            selectors: HashMap::new(),
            endpoints_by_label: HashMap::new(),
            read_keys: HashMap::new(),
            guarded_by_value: HashMap::new(),
            guarded_by_key: HashMap::new(),
            unguarded_readers: HashMap::new(),
            unguarded_matching_empty: BTreeSet::new(),
            strings: LabelStrings::default(),
        }
    }
}

impl<E: IndexKey, S: IndexKey> LabelIndex<E, S> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The endpoints `selector` matches, in order; none for an unknown selector.
    pub fn matching(&self, selector: &S) -> impl Iterator<Item = &E> {
        self.selectors
            .get(selector)
            .into_iter()
            .flat_map(|entry| entry.matches.iter())
    }

    /// The selectors matching `endpoint`, in order; none for an unknown endpoint.
    pub fn selectors_matching(&self, endpoint: &E) -> impl Iterator<Item = &S> {
        self.endpoints
            .get(endpoint)
            .into_iter()
            .flat_map(|entry| entry.matches.iter())
    }

    /// The selector stored under `id`.
    pub fn selector(&self, id: &S) -> Option<&Selector> {
        self.selectors.get(id).map(|entry| &entry.selector)
    }

    /// The labels stored for endpoint `id`.
    pub fn endpoint_labels(&self, id: &E) -> Option<&LabelSet> {
        self.endpoints.get(id).map(|entry| &entry.labels)
    }

    /// Adds endpoint `id`, or replaces its labels.
    pub fn update_endpoint(
        &mut self,
        id: E,
        labels: EndpointLabels,
        out: &mut Vec<MatchChange<E, S>>,
    ) {
        let labels = self.strings.label_set(&labels);
        let Some(mut entry) = self.endpoints.remove(&id) else {
            self.add_endpoint(id, labels, out);
            return;
        };
        let flips = {
            let changed = changed_keys(&entry.labels, &labels);
            self.flips(&labels, &changed, &entry.matches)
        };
        for (selector, now_matches) in flips {
            if let Some(selector_entry) = self.selectors.get_mut(&selector) {
                if now_matches {
                    selector_entry.matches.insert(id.clone());
                } else {
                    selector_entry.matches.remove(&id);
                }
            }
            if now_matches {
                insert_sorted(&mut entry.matches, selector.clone());
                out.push(MatchChange::Started {
                    selector,
                    endpoint: id.clone(),
                });
            } else {
                remove_sorted(&mut entry.matches, &selector);
                out.push(MatchChange::Stopped {
                    selector,
                    endpoint: id.clone(),
                });
            }
        }
        // Only the pairs that changed move in the postings.
        for (key, value) in entry.labels.iter() {
            if labels.get(key) != Some(value) {
                self.remove_posting(key, value, &id);
            }
        }
        for (key, value) in labels.iter() {
            if entry.labels.get(key) != Some(value) {
                self.add_posting(key, value, &id);
            }
        }
        entry.labels = labels;
        self.endpoints.insert(id, entry);
    }

    fn add_endpoint(&mut self, id: E, labels: LabelSet, out: &mut Vec<MatchChange<E, S>>) {
        // A new endpoint is a relabel of an endpoint without labels, whose matches are
        // exactly the unguarded selectors that match no labels (a guard needs a label).
        let mut matches: Vec<S> = self.unguarded_matching_empty.iter().cloned().collect();
        let flips = {
            // Every key of the new endpoint "appeared"; a label set's keys are sorted.
            let changed: Vec<&str> = labels.keys().collect();
            self.flips(&labels, &changed, &matches)
        };
        for (selector, now_matches) in flips {
            if now_matches {
                insert_sorted(&mut matches, selector);
            } else {
                remove_sorted(&mut matches, &selector);
            }
        }
        for selector in &matches {
            if let Some(selector_entry) = self.selectors.get_mut(selector) {
                selector_entry.matches.insert(id.clone());
            }
            out.push(MatchChange::Started {
                selector: selector.clone(),
                endpoint: id.clone(),
            });
        }
        for (key, value) in labels.iter() {
            self.add_posting(key, value, &id);
        }
        self.endpoints.insert(id, EndpointEntry { labels, matches });
    }

    /// Removes endpoint `id`; unknown ids are not an error.
    pub fn remove_endpoint(&mut self, id: &E, out: &mut Vec<MatchChange<E, S>>) {
        let Some(entry) = self.endpoints.remove(id) else {
            return;
        };
        for selector in entry.matches {
            if let Some(selector_entry) = self.selectors.get_mut(&selector) {
                selector_entry.matches.remove(id);
            }
            out.push(MatchChange::Stopped {
                selector,
                endpoint: id.clone(),
            });
        }
        for (key, value) in entry.labels.iter() {
            self.remove_posting(key, value, id);
        }
    }

    /// Adds selector `id`, or replaces it; a replacement reports only the endpoints whose
    /// match differs between the old and the new selector.
    pub fn update_selector(&mut self, id: S, selector: Selector, out: &mut Vec<MatchChange<E, S>>) {
        if self
            .selectors
            .get(&id)
            .is_some_and(|entry| entry.selector == selector)
        {
            return;
        }
        // The new selector's keys first, so that keys both read keep their postings.
        let keys = selector
            .label_keys()
            .into_iter()
            .map(Box::from)
            .collect::<Box<[Box<str>]>>();
        self.start_reading(&keys);
        let old_matches = match self.selectors.remove(&id) {
            Some(old) => {
                self.unindex_selector(&id, &old);
                self.stop_reading(&old.keys);
                old.matches
            }
            None => BTreeSet::new(),
        };
        let new_matches = self.evaluate_new_selector(&selector);
        for endpoint in old_matches.difference(&new_matches) {
            if let Some(endpoint_entry) = self.endpoints.get_mut(endpoint) {
                remove_sorted(&mut endpoint_entry.matches, &id);
            }
            out.push(MatchChange::Stopped {
                selector: id.clone(),
                endpoint: endpoint.clone(),
            });
        }
        for endpoint in new_matches.difference(&old_matches) {
            if let Some(endpoint_entry) = self.endpoints.get_mut(endpoint) {
                insert_sorted(&mut endpoint_entry.matches, id.clone());
            }
            out.push(MatchChange::Started {
                selector: id.clone(),
                endpoint: endpoint.clone(),
            });
        }
        let guard = choose_guard(selector.expr());
        let entry = SelectorEntry {
            selector,
            keys,
            guard,
            matches: new_matches,
        };
        self.index_selector(&id, &entry);
        self.selectors.insert(id, entry);
    }

    /// Removes selector `id`; unknown ids are not an error.
    pub fn remove_selector(&mut self, id: &S, out: &mut Vec<MatchChange<E, S>>) {
        let Some(entry) = self.selectors.remove(id) else {
            return;
        };
        self.unindex_selector(id, &entry);
        self.stop_reading(&entry.keys);
        for endpoint in entry.matches {
            if let Some(endpoint_entry) = self.endpoints.get_mut(&endpoint) {
                remove_sorted(&mut endpoint_entry.matches, id);
            }
            out.push(MatchChange::Stopped {
                selector: id.clone(),
                endpoint,
            });
        }
    }

    /// The selectors whose match on an endpoint differs from `old_matches` once its labels
    /// are `new_labels`, given the keys whose value `changed` (sorted). Returns each with
    /// its new state.
    ///
    /// A selector that reads no changed key keeps its result. Of those that read one, the
    /// ones that matched are in `old_matches`, and the ones that may match now are either
    /// unguarded (found through `unguarded_readers` of a changed key) or satisfy their
    /// guard on `new_labels` (found through the guard indexes).
    fn flips(&self, new_labels: &LabelSet, changed: &[&str], old_matches: &[S]) -> Vec<(S, bool)> {
        if changed.is_empty() {
            return Vec::new();
        }
        // Candidates: what matched, the unguarded readers of a changed key, and the
        // selectors guarded by a label the endpoint has. Only those reading a changed key
        // can flip (an unguarded reader does by construction); each is looked up once.
        let mut to_evaluate: Vec<&S> = old_matches.iter().collect();
        for key in changed {
            if let Some(readers) = self.unguarded_readers.get(*key) {
                to_evaluate.extend(readers);
            }
        }
        for (key, value) in new_labels.iter() {
            let by_value = self
                .guarded_by_value
                .get(key)
                .and_then(|by_value| by_value.get(value));
            let by_key = self.guarded_by_key.get(key);
            to_evaluate.extend(by_value.into_iter().chain(by_key).flatten());
        }
        to_evaluate.sort_unstable();
        to_evaluate.dedup();
        to_evaluate
            .into_iter()
            .filter_map(|selector| {
                let entry = self.selectors.get(selector)?;
                if !reads_any(&entry.keys, changed) {
                    return None;
                }
                let now_matches = entry.selector.matches(new_labels);
                (now_matches != old_matches.binary_search(selector).is_ok())
                    .then(|| (selector.clone(), now_matches))
            })
            .collect()
    }

    /// The endpoints `selector` matches, evaluating as few as the indexes allow.
    fn evaluate_new_selector(&self, selector: &Selector) -> BTreeSet<E> {
        let mut matches = BTreeSet::new();
        let mut consider = |endpoint: &E| {
            if let Some(entry) = self.endpoints.get(endpoint)
                && selector.matches(&entry.labels)
            {
                matches.insert(endpoint.clone());
            }
        };
        let mut terms = Vec::new();
        required_terms(selector.expr(), &mut terms);
        let best = terms
            .into_iter()
            .min_by_key(|term| self.candidate_count(*term));
        if let Some(term) = best {
            self.for_each_candidate(term, &mut consider);
        } else if !selector.matches(&NoLabels) {
            // It cannot match an endpoint that has none of the keys it reads, as that
            // endpoint looks to it like one without labels.
            for key in selector.label_keys() {
                if let Some(postings) = self.endpoints_by_label.get(key) {
                    postings.by_value.values().flatten().for_each(&mut consider);
                }
            }
        } else {
            self.endpoints.keys().for_each(consider);
        }
        matches
    }

    fn candidate_count(&self, term: Term<'_>) -> usize {
        let value_count = |label: &str, value: &str| {
            self.endpoints_by_label
                .get(label)
                .and_then(|postings| postings.by_value.get(value))
                .map_or(0, HashSet::len)
        };
        match term {
            Term::Equal(label, value) => value_count(label, value),
            Term::In(label, values) => values.iter().map(|value| value_count(label, value)).sum(),
            Term::Has(label) => self
                .endpoints_by_label
                .get(label)
                .map_or(0, |postings| postings.endpoints),
        }
    }

    fn for_each_candidate(&self, term: Term<'_>, visit: &mut impl FnMut(&E)) {
        let (Term::Equal(label, _) | Term::In(label, _) | Term::Has(label)) = term;
        let Some(postings) = self.endpoints_by_label.get(label) else {
            return;
        };
        let mut visit_value = |value: &str| {
            if let Some(endpoints) = postings.by_value.get(value) {
                endpoints.iter().for_each(&mut *visit);
            }
        };
        match term {
            Term::Equal(_, value) => visit_value(value),
            Term::In(_, values) => values.iter().for_each(visit_value),
            Term::Has(_) => postings.by_value.values().flatten().for_each(visit),
        }
    }

    fn index_selector(&mut self, id: &S, entry: &SelectorEntry<E>) {
        match &entry.guard {
            Some(Guard::Values { label, values }) => {
                let by_value = self.guarded_by_value.entry(label.clone()).or_default();
                for value in values {
                    by_value
                        .entry(value.clone())
                        .or_default()
                        .insert(id.clone());
                }
            }
            Some(Guard::Has { label }) => {
                self.guarded_by_key
                    .entry(label.clone())
                    .or_default()
                    .insert(id.clone());
            }
            None => {
                for key in &entry.keys {
                    self.unguarded_readers
                        .entry(key.clone())
                        .or_default()
                        .insert(id.clone());
                }
                if entry.selector.matches(&NoLabels) {
                    self.unguarded_matching_empty.insert(id.clone());
                }
            }
        }
    }

    fn unindex_selector(&mut self, id: &S, entry: &SelectorEntry<E>) {
        match &entry.guard {
            Some(Guard::Values { label, values }) => {
                if let Some(by_value) = self.guarded_by_value.get_mut(label) {
                    for value in values {
                        remove_from_set_map(by_value, value, id);
                    }
                    if by_value.is_empty() {
                        self.guarded_by_value.remove(label);
                    }
                }
            }
            Some(Guard::Has { label }) => remove_from_set_map(&mut self.guarded_by_key, label, id),
            None => {
                for key in &entry.keys {
                    remove_from_set_map(&mut self.unguarded_readers, key, id);
                }
                self.unguarded_matching_empty.remove(id);
            }
        }
    }

    /// One more selector reads each of `keys`; a key read for the first time gets the
    /// postings of every endpoint carrying it.
    fn start_reading(&mut self, keys: &[Box<str>]) {
        for key in keys {
            let readers = self.read_keys.entry(key.clone()).or_insert(0);
            *readers += 1;
            if *readers == 1 {
                for (id, entry) in &self.endpoints {
                    if let Some(value) = entry.labels.get(key) {
                        post(&mut self.endpoints_by_label, key, value, id);
                    }
                }
            }
        }
    }

    /// One selector fewer reads each of `keys`; a key no selector reads loses its postings.
    fn stop_reading(&mut self, keys: &[Box<str>]) {
        for key in keys {
            if let Some(readers) = self.read_keys.get_mut(key) {
                *readers -= 1;
                if *readers == 0 {
                    self.read_keys.remove(key);
                    self.endpoints_by_label.remove(key);
                }
            }
        }
    }

    fn add_posting(&mut self, key: &str, value: &str, id: &E) {
        if self.read_keys.contains_key(key) {
            post(&mut self.endpoints_by_label, key, value, id);
        }
    }

    fn remove_posting(&mut self, key: &str, value: &str, id: &E) {
        let Some(postings) = self.endpoints_by_label.get_mut(key) else {
            return;
        };
        if let Some(endpoints) = postings.by_value.get_mut(value)
            && endpoints.remove(id)
        {
            postings.endpoints -= 1;
            if endpoints.is_empty() {
                postings.by_value.remove(value);
            }
        }
        // Dropped when empty so that churning label values does not grow the index.
        if postings.by_value.is_empty() {
            self.endpoints_by_label.remove(key);
        }
    }
}

/// Files endpoint `id` under `key` = `value`.
fn post<E: IndexKey>(
    postings: &mut HashMap<Box<str>, LabelPostings<E>>,
    key: &str,
    value: &str,
    id: &E,
) {
    // Looked up before inserting: `entry` would box the key and value of every posting,
    // and nearly all of them are there already.
    if !postings.contains_key(key) {
        postings.insert(
            Box::from(key),
            LabelPostings {
                endpoints: 0,
                by_value: HashMap::new(),
            },
        );
    }
    let Some(postings) = postings.get_mut(key) else {
        return;
    };
    if !postings.by_value.contains_key(value) {
        postings
            .by_value
            .insert(Box::from(value), HashSet::default());
    }
    if postings
        .by_value
        .get_mut(value)
        .is_some_and(|endpoints| endpoints.insert(id.clone()))
    {
        postings.endpoints += 1;
    }
}

/// The keys whose value differs between `old` and `new` (set, changed or removed), sorted.
fn changed_keys<'a>(old: &'a LabelSet, new: &'a LabelSet) -> Vec<&'a str> {
    let mut changed: Vec<&str> = old
        .iter()
        .filter(|(key, value)| new.get(key) != Some(value))
        .map(|(key, _)| key)
        .chain(new.keys().filter(|key| old.get(key).is_none()))
        .collect();
    changed.sort_unstable();
    changed
}

/// Adds `item` to a sorted vector (once). Most endpoints match a selector or two: small
/// vectors grow one at a time, not to Vec's first four.
fn insert_sorted<T: Ord>(sorted: &mut Vec<T>, item: T) {
    if let Err(at) = sorted.binary_search(&item) {
        if sorted.len() < 4 {
            sorted.reserve_exact(1);
        }
        sorted.insert(at, item);
    }
}

fn remove_sorted<T: Ord>(sorted: &mut Vec<T>, item: &T) {
    if let Ok(at) = sorted.binary_search(item) {
        sorted.remove(at);
    }
}

/// Whether any of `keys` is in `sorted` (both sorted, `keys` usually a handful).
fn reads_any(keys: &[Box<str>], sorted: &[&str]) -> bool {
    keys.iter().any(|key| sorted.binary_search(&&**key).is_ok())
}

/// Collects the positive terms `expr` requires: itself, or the operands of an `&&`.
fn required_terms<'a>(expr: &'a Expr, out: &mut Vec<Term<'a>>) {
    match expr {
        Expr::Equal { label, value } => out.push(Term::Equal(label, value)),
        Expr::In { label, values } => out.push(Term::In(label, values)),
        Expr::Has { label } => out.push(Term::Has(label)),
        Expr::And(operands) => {
            for operand in operands {
                required_terms(operand, out);
            }
        }
        // Anything else (negations, `||`, substring tests) also holds for endpoints
        // outside any single value bucket, so it narrows nothing.
        _ => {}
    }
}

/// The guard a selector is filed under for endpoint changes. Fixed when the selector is
/// added, so it prefers the most specific kind of term rather than counting endpoints.
fn choose_guard(expr: &Expr) -> Option<Guard> {
    let mut terms = Vec::new();
    required_terms(expr, &mut terms);
    let rank = |term: &Term<'_>| match term {
        Term::Equal(..) => 0,
        Term::In(_, values) => values.len(),
        Term::Has(_) => usize::MAX,
    };
    let best = terms.into_iter().min_by_key(rank)?;
    Some(match best {
        Term::Equal(label, value) => Guard::Values {
            label: Box::from(label),
            values: Box::new([Box::from(value)]),
        },
        Term::In(label, values) => Guard::Values {
            label: Box::from(label),
            values: values.iter().map(Box::from).collect(),
        },
        Term::Has(label) => Guard::Has {
            label: Box::from(label),
        },
    })
}

fn remove_from_set_map<T: Ord>(map: &mut HashMap<Box<str>, BTreeSet<T>>, key: &str, item: &T) {
    if let Some(set) = map.get_mut(key) {
        set.remove(item);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::collection::{btree_map, vec};
    use proptest::prelude::*;
    use proptest::sample::{Index, select};
    use proptest::test_runner::Config;

    use super::{EndpointLabels, LabelIndex, MatchChange};
    use crate::selector::Selector;

    type Index_ = LabelIndex<&'static str, &'static str>;
    type Changes = Vec<MatchChange<&'static str, &'static str>>;

    fn mk_labels(pairs: &[(&str, &str)]) -> EndpointLabels {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    fn sel(text: &str) -> Selector {
        Selector::parse(text).expect("test selector parses")
    }

    fn started(
        selector: &'static str,
        endpoint: &'static str,
    ) -> MatchChange<&'static str, &'static str> {
        MatchChange::Started { selector, endpoint }
    }

    fn stopped(
        selector: &'static str,
        endpoint: &'static str,
    ) -> MatchChange<&'static str, &'static str> {
        MatchChange::Stopped { selector, endpoint }
    }

    fn matching(index: &Index_, selector: &'static str) -> Vec<&'static str> {
        index.matching(&selector).copied().collect()
    }

    /// Adds `selector` under `id` and returns what it reported.
    fn put_selector(index: &mut Index_, id: &'static str, selector: &str) -> Changes {
        let mut out = Vec::new();
        index.update_selector(id, sel(selector), &mut out);
        out
    }

    fn put_endpoint(index: &mut Index_, id: &'static str, labels: &[(&str, &str)]) -> Changes {
        let mut out = Vec::new();
        index.update_endpoint(id, mk_labels(labels), &mut out);
        out
    }

    #[test]
    fn endpoint_added_after_selector_starts_matching_it() {
        let mut index = Index_::new();
        assert!(put_selector(&mut index, "db", "role == 'db'").is_empty());
        assert_eq!(
            put_endpoint(&mut index, "pod1", &[("role", "db")]),
            [started("db", "pod1")]
        );
        assert!(put_endpoint(&mut index, "pod2", &[("role", "web")]).is_empty());
        assert_eq!(matching(&index, "db"), ["pod1"]);
        assert_eq!(
            index.selectors_matching(&"pod1").collect::<Vec<_>>(),
            [&"db"]
        );
    }

    #[test]
    fn selector_added_after_endpoints_matches_only_those_it_selects() {
        let mut index = Index_::new();
        put_endpoint(&mut index, "pod1", &[("role", "db"), ("tier", "a")]);
        put_endpoint(&mut index, "pod2", &[("role", "db")]);
        put_endpoint(&mut index, "pod3", &[("role", "web"), ("tier", "a")]);
        assert_eq!(
            put_selector(&mut index, "s", "role == 'db' && has(tier)"),
            [started("s", "pod1")]
        );
        assert_eq!(
            put_selector(&mut index, "in", "role in {'db', 'web'}"),
            [
                started("in", "pod1"),
                started("in", "pod2"),
                started("in", "pod3")
            ]
        );
        assert_eq!(
            put_selector(&mut index, "sub", "role starts with 'w'"),
            [started("sub", "pod3")]
        );
        assert!(put_selector(&mut index, "none", "role in {}").is_empty());
    }

    #[test]
    fn only_keys_some_selector_reads_have_postings_and_a_new_reader_builds_them() {
        let mut index = Index_::new();
        put_endpoint(&mut index, "e1", &[("app", "web"), ("zone", "a")]);
        put_endpoint(&mut index, "e2", &[("app", "db"), ("zone", "a")]);
        assert!(index.endpoints_by_label.is_empty());
        put_selector(&mut index, "s1", "app == 'web'");
        assert_eq!(index.endpoints_by_label.len(), 1);
        // Reading zone for the first time finds both endpoints through new postings.
        assert_eq!(
            put_selector(&mut index, "s2", "zone == 'a'"),
            [started("s2", "e1"), started("s2", "e2")]
        );
        put_endpoint(&mut index, "e3", &[("zone", "a")]);
        assert_eq!(index.candidate_count(super::Term::Has("zone")), 3);
        // Replaced by a selector reading the same key: its postings stay.
        put_selector(&mut index, "s2", "zone == 'b'");
        assert_eq!(index.candidate_count(super::Term::Has("zone")), 3);
        let mut out = Vec::new();
        index.remove_selector(&"s2", &mut out);
        assert!(!index.endpoints_by_label.contains_key("zone"));
        assert_eq!(matching(&index, "s1"), ["e1"]);
    }

    #[test]
    fn relabelling_reports_starts_and_stops() {
        let mut index = Index_::new();
        put_selector(&mut index, "db", "role == 'db'");
        put_selector(&mut index, "web", "role == 'web'");
        put_selector(&mut index, "any", "has(role)");
        put_endpoint(&mut index, "pod", &[("role", "db")]);
        assert_eq!(
            put_endpoint(&mut index, "pod", &[("role", "web")]),
            [stopped("db", "pod"), started("web", "pod")]
        );
        assert_eq!(
            put_endpoint(&mut index, "pod", &[]),
            [stopped("any", "pod"), stopped("web", "pod")]
        );
        assert!(matching(&index, "web").is_empty());
    }

    #[test]
    fn changes_that_alter_no_match_report_nothing() {
        let mut index = Index_::new();
        put_selector(&mut index, "db", "role == 'db'");
        put_selector(&mut index, "not-a", "tier != 'a'");
        put_endpoint(&mut index, "pod", &[("role", "db"), ("tier", "b")]);
        // Same labels, a key no selector reads, and a value change that keeps both results.
        assert!(put_endpoint(&mut index, "pod", &[("role", "db"), ("tier", "b")]).is_empty());
        assert!(
            put_endpoint(
                &mut index,
                "pod",
                &[("role", "db"), ("tier", "b"), ("x", "1")]
            )
            .is_empty()
        );
        assert!(put_endpoint(&mut index, "pod", &[("role", "db"), ("tier", "c")]).is_empty());
        assert_eq!(matching(&index, "db"), ["pod"]);
        assert_eq!(matching(&index, "not-a"), ["pod"]);
    }

    #[test]
    fn removing_an_endpoint_stops_every_selector_matching_it() {
        let mut index = Index_::new();
        put_selector(&mut index, "db", "role == 'db'");
        put_selector(&mut index, "all", "all()");
        put_selector(&mut index, "web", "role == 'web'");
        put_endpoint(&mut index, "pod", &[("role", "db")]);
        let mut out = Vec::new();
        index.remove_endpoint(&"pod", &mut out);
        assert_eq!(out, [stopped("all", "pod"), stopped("db", "pod")]);
        assert!(matching(&index, "all").is_empty());
        // Removing it again, or anything unknown, is not an error and reports nothing.
        out.clear();
        index.remove_endpoint(&"pod", &mut out);
        index.remove_selector(&"nope", &mut out);
        assert!(out.is_empty());
        // The postings went with it: a new selector on its label finds nothing.
        assert!(put_selector(&mut index, "db2", "role == 'db'").is_empty());
    }

    #[test]
    fn removing_a_selector_stops_every_endpoint_it_matched() {
        let mut index = Index_::new();
        put_endpoint(&mut index, "pod1", &[("role", "db")]);
        put_endpoint(&mut index, "pod2", &[("role", "db")]);
        put_endpoint(&mut index, "pod3", &[("role", "web")]);
        put_selector(&mut index, "db", "role == 'db'");
        let mut out = Vec::new();
        index.remove_selector(&"db", &mut out);
        assert_eq!(out, [stopped("db", "pod1"), stopped("db", "pod2")]);
        assert_eq!(index.selectors_matching(&"pod1").count(), 0);
        // Its index entries went too: a relabel onto its value reports nothing.
        assert!(put_endpoint(&mut index, "pod3", &[("role", "db")]).is_empty());
    }

    #[test]
    fn replacing_a_selector_reports_only_the_difference() {
        let mut index = Index_::new();
        put_endpoint(&mut index, "pod1", &[("role", "db")]);
        put_endpoint(&mut index, "pod2", &[("role", "web")]);
        put_endpoint(&mut index, "pod3", &[("role", "cache")]);
        put_selector(&mut index, "s", "role in {'db', 'web'}");
        assert_eq!(
            put_selector(&mut index, "s", "role in {'web', 'cache'}"),
            [stopped("s", "pod1"), started("s", "pod3")]
        );
        // The replaced selector is the one endpoint changes are tested against.
        assert_eq!(
            put_endpoint(&mut index, "pod1", &[("role", "cache")]),
            [started("s", "pod1")]
        );
    }

    #[test]
    fn replacing_a_selector_with_an_equivalent_one_reports_nothing() {
        let mut index = Index_::new();
        put_endpoint(&mut index, "pod1", &[("role", "db"), ("tier", "a")]);
        put_endpoint(&mut index, "pod2", &[("role", "db")]);
        put_selector(&mut index, "s", "role == 'db' && has(tier)");
        assert!(put_selector(&mut index, "s", "role == 'db' && has(tier)").is_empty());
        assert!(put_selector(&mut index, "s", "has(tier) && role == \"db\"").is_empty());
        assert!(put_selector(&mut index, "s", "has(tier) && !(role != 'db')").is_empty());
        assert_eq!(matching(&index, "s"), ["pod1"]);
    }

    #[test]
    fn all_and_global_match_every_endpoint_even_without_labels() {
        let mut index = Index_::new();
        put_endpoint(&mut index, "bare", &[]);
        put_selector(&mut index, "all", "all()");
        put_selector(&mut index, "global", "global()");
        put_selector(&mut index, "empty", "");
        put_endpoint(&mut index, "pod", &[("role", "db")]);
        for selector in ["all", "global", "empty"] {
            assert_eq!(matching(&index, selector), ["bare", "pod"], "{selector}");
        }
        // A relabel never touches them: they read no key.
        assert!(put_endpoint(&mut index, "pod", &[("role", "web")]).is_empty());
    }

    #[test]
    fn negations_match_endpoints_that_lack_the_key() {
        let mut index = Index_::new();
        put_endpoint(&mut index, "bare", &[]);
        put_endpoint(&mut index, "a", &[("k", "a")]);
        put_endpoint(&mut index, "v", &[("k", "v")]);
        put_endpoint(&mut index, "x", &[("x", "1")]);
        put_selector(&mut index, "!has", "!has(x)");
        put_selector(&mut index, "ne", "k != 'v'");
        put_selector(&mut index, "not-in", "k not in {'v'}");
        put_selector(&mut index, "not-eq", "!(k == 'v')");
        // A guard term and a negation together: only the guard narrows the candidates.
        put_selector(&mut index, "guarded", "has(k) && !has(x)");
        put_selector(&mut index, "or", "k == 'v' || !has(k)");
        assert_eq!(matching(&index, "!has"), ["a", "bare", "v"]);
        for selector in ["ne", "not-in", "not-eq"] {
            assert_eq!(matching(&index, selector), ["a", "bare", "x"], "{selector}");
        }
        assert_eq!(matching(&index, "guarded"), ["a", "v"]);
        assert_eq!(matching(&index, "or"), ["bare", "v", "x"]);

        // And the same after the fact: new endpoints and relabels.
        let mut out = put_endpoint(&mut index, "new", &[]);
        out.sort();
        assert_eq!(
            out,
            [
                started("!has", "new"),
                started("ne", "new"),
                started("not-eq", "new"),
                started("not-in", "new"),
                started("or", "new"),
            ]
        );
        let mut out = put_endpoint(&mut index, "x", &[]);
        out.sort();
        assert_eq!(out, [started("!has", "x")]);
        let mut out = put_endpoint(&mut index, "a", &[("k", "v")]);
        out.sort();
        assert_eq!(
            out,
            [
                started("or", "a"),
                stopped("ne", "a"),
                stopped("not-eq", "a"),
                stopped("not-in", "a"),
            ]
        );
    }

    /// Few keys and values, so that generated selectors and endpoints meet often.
    const KEYS: &[&str] = &["a", "b", "c"];
    const VALUES: &[&str] = &["x", "y", "z"];

    fn selector_text() -> impl Strategy<Value = String> {
        let key = select(KEYS);
        let value = select(VALUES);
        let leaf = prop_oneof![
            Just("all()".to_owned()),
            key.clone().prop_map(|k| format!("has({k})")),
            key.clone().prop_map(|k| format!("!has({k})")),
            (key.clone(), value.clone()).prop_map(|(k, v)| format!("{k} == '{v}'")),
            (key.clone(), value.clone()).prop_map(|(k, v)| format!("{k} != '{v}'")),
            (key.clone(), value.clone()).prop_map(|(k, v)| format!("{k} starts with '{v}'")),
            (key.clone(), vec(value.clone(), 0..3))
                .prop_map(|(k, vs)| format!("{k} in {{{}}}", quoted(&vs))),
            (key, vec(value, 0..3)).prop_map(|(k, vs)| format!("{k} not in {{{}}}", quoted(&vs))),
        ];
        leaf.prop_recursive(3, 12, 3, |inner| {
            prop_oneof![
                vec(inner.clone(), 2..4).prop_map(|parts| format!("({})", parts.join(" && "))),
                vec(inner.clone(), 2..4).prop_map(|parts| format!("({})", parts.join(" || "))),
                inner.prop_map(|part| format!("!({part})")),
            ]
        })
    }

    fn quoted(values: &[&str]) -> String {
        values
            .iter()
            .map(|value| format!("'{value}'"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    #[derive(Debug, Clone)]
    enum Op {
        UpdateEndpoint(u8, BTreeMap<&'static str, &'static str>),
        RemoveEndpoint(u8),
        UpdateSelector(u8, Index),
        RemoveSelector(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..20u8, btree_map(select(KEYS), select(VALUES), 0..4))
                .prop_map(|(id, labels)| Op::UpdateEndpoint(id, labels)),
            1 => (0..20u8).prop_map(Op::RemoveEndpoint),
            3 => (0..10u8, any::<Index>()).prop_map(|(id, pick)| Op::UpdateSelector(id, pick)),
            1 => (0..10u8).prop_map(Op::RemoveSelector),
        ]
    }

    proptest! {
        #![proptest_config(Config { cases: 64, ..Config::default() })]

        /// After every operation the index agrees with evaluating every selector on every
        /// endpoint, and so does replaying the changes it reported.
        #[test]
        fn index_agrees_with_brute_force(
            pool in vec(selector_text(), 1..8),
            ops in vec(op(), 1..60),
        ) {
            let pool: Vec<Selector> = pool.iter().map(|text| sel(text)).collect();
            let mut index: LabelIndex<u8, u8> = LabelIndex::new();
            let mut endpoints: BTreeMap<u8, EndpointLabels> = BTreeMap::new();
            let mut selectors: BTreeMap<u8, Selector> = BTreeMap::new();
            let mut replayed: BTreeSet<(u8, u8)> = BTreeSet::new();
            let mut out = Vec::new();
            for op in ops {
                out.clear();
                match op {
                    Op::UpdateEndpoint(id, labels) => {
                        let labels: EndpointLabels = labels
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), v.to_owned()))
                            .collect();
                        endpoints.insert(id, labels.clone());
                        index.update_endpoint(id, labels, &mut out);
                    }
                    Op::RemoveEndpoint(id) => {
                        endpoints.remove(&id);
                        index.remove_endpoint(&id, &mut out);
                    }
                    Op::UpdateSelector(id, pick) => {
                        let selector = pick.get(&pool).clone();
                        selectors.insert(id, selector.clone());
                        index.update_selector(id, selector, &mut out);
                    }
                    Op::RemoveSelector(id) => {
                        selectors.remove(&id);
                        index.remove_selector(&id, &mut out);
                    }
                }
                for change in &out {
                    match *change {
                        MatchChange::Started { selector, endpoint } => {
                            prop_assert!(replayed.insert((selector, endpoint)), "duplicate {change:?}");
                        }
                        MatchChange::Stopped { selector, endpoint } => {
                            prop_assert!(replayed.remove(&(selector, endpoint)), "no-op {change:?}");
                        }
                    }
                }
                let expected: BTreeSet<(u8, u8)> = selectors
                    .iter()
                    .flat_map(|(s, selector)| {
                        endpoints
                            .iter()
                            .filter(|(_, labels)| selector.matches(*labels))
                            .map(|(e, _)| (*s, *e))
                    })
                    .collect();
                prop_assert_eq!(&replayed, &expected);
                let indexed: BTreeSet<(u8, u8)> = selectors
                    .keys()
                    .flat_map(|s| index.matching(s).map(|e| (*s, *e)))
                    .collect();
                prop_assert_eq!(&indexed, &expected);
                let reverse: BTreeSet<(u8, u8)> = endpoints
                    .keys()
                    .flat_map(|e| index.selectors_matching(e).map(|s| (*s, *e)))
                    .collect();
                prop_assert_eq!(&reverse, &expected);
            }
        }
    }
}
