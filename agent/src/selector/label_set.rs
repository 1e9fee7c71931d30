//! Endpoints' labels as the index keeps them. 100,000 endpoints carry a few thousand
//! distinct labels: each (key, value) pair is stored once and shared, and an endpoint's
//! labels are one sorted slice of pointers to them — one small allocation per endpoint,
//! where a map costs a tree node and two strings per label (about a kilobyte per
//! endpoint, most of calc's memory).

use std::collections::BTreeMap;
use std::sync::Arc;

use foldhash::{HashMap, HashSet};

use super::Labels;

type Label = (Arc<str>, Arc<str>);

/// Labels sorted by key, each key once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSet(Vec<Arc<Label>>);

impl LabelSet {
    pub const EMPTY: LabelSet = LabelSet(Vec::new());

    /// (key, value) pairs, in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.0.iter().map(|label| (&*label.0, &*label.1))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|label| &*label.0)
    }

    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.iter()
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect()
    }

    /// Whether `map` holds exactly these labels.
    pub fn equals_map(&self, map: &BTreeMap<String, String>) -> bool {
        self.0.len() == map.len()
            && self
                .iter()
                .zip(map)
                .all(|((key, value), (map_key, map_value))| key == map_key && value == map_value)
    }
}

impl Labels for LabelSet {
    fn get(&self, key: &str) -> Option<&str> {
        let at = self.0.binary_search_by(|label| (*label.0).cmp(key)).ok()?;
        Some(&self.0[at].1)
    }
}

/// Makes [`LabelSet`]s that share their labels and strings; forgets those no set uses any
/// more.
#[derive(Debug, Default)]
pub struct LabelStrings {
    strings: HashSet<Arc<str>>,
    /// By the addresses of their shared key and value: strings are shared, so equal
    /// addresses are equal texts, and a label keeps its strings (and addresses) alive.
    /// Hashing two words instead of two texts again is a tenth of taking an endpoint.
    labels: HashMap<(usize, usize), Arc<Label>>,
    /// How many labels and strings to hold before looking for unused ones: twice what was
    /// in use at the last look, so looking costs O(1) per one made.
    purge_at: usize,
}

/// The fewest strings worth a purge.
const MIN_PURGE: usize = 1024;

impl LabelStrings {
    pub fn label_set(&mut self, labels: &BTreeMap<String, String>) -> LabelSet {
        // A map's keys are sorted and unique: so are the set's.
        LabelSet(
            labels
                .iter()
                .map(|(key, value)| self.share_label(key, value))
                .collect(),
        )
    }

    fn share_label(&mut self, key: &str, value: &str) -> Arc<Label> {
        let label = (self.share(key), self.share(value));
        let address = |text: &Arc<str>| Arc::as_ptr(text).cast::<u8>() as usize;
        let id = (address(&label.0), address(&label.1));
        if let Some(shared) = self.labels.get(&id) {
            return shared.clone();
        }
        self.purge_if_due();
        let shared = Arc::new(label);
        self.labels.insert(id, shared.clone());
        shared
    }

    fn share(&mut self, text: &str) -> Arc<str> {
        if let Some(shared) = self.strings.get(text) {
            return shared.clone();
        }
        self.purge_if_due();
        let shared: Arc<str> = Arc::from(text);
        self.strings.insert(shared.clone());
        shared
    }

    fn purge_if_due(&mut self) {
        if self.strings.len().max(self.labels.len()) >= self.purge_at {
            // Labels first: they hold strings.
            self.labels.retain(|_, label| Arc::strong_count(label) > 1);
            self.strings.retain(|string| Arc::strong_count(string) > 1);
            self.purge_at = (self.strings.len().max(self.labels.len()) * 2).max(MIN_PURGE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_label_set_answers_like_its_map_and_shares_strings() {
        let mut strings = LabelStrings::default();
        let labels = map(&[("app", "web"), ("tier", ""), ("zone", "web")]);
        let set = strings.label_set(&labels);
        assert!(set.equals_map(&labels));
        assert_eq!(set.to_map(), labels);
        assert_eq!(set.get("app"), Some("web"));
        assert_eq!(set.get("tier"), Some(""));
        assert_eq!(set.get("role"), None);
        let again = strings.label_set(&map(&[("app", "api")]));
        assert!(
            Arc::ptr_eq(&set.0[0].0, &again.0[0].0),
            "the key app is shared"
        );
        assert!(
            Arc::ptr_eq(&set.0[0].1, &set.0[2].1),
            "the value web is shared"
        );
        assert!(!again.equals_map(&labels));
    }

    #[test]
    fn strings_no_set_uses_are_forgotten() {
        let mut strings = LabelStrings::default();
        for n in 0..10 * MIN_PURGE {
            drop(strings.label_set(&map(&[("k", &n.to_string())])));
        }
        assert!(
            strings.strings.len() <= 2 * MIN_PURGE,
            "{}",
            strings.strings.len()
        );
        assert!(
            strings.labels.len() <= 2 * MIN_PURGE,
            "{}",
            strings.labels.len()
        );
    }
}
