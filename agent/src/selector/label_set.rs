//! Endpoints' labels as the index keeps them. 100,000 endpoints carry a few hundred
//! distinct label strings: each string is stored once and shared, and an endpoint's labels
//! are one sorted slice — one allocation per endpoint, where a map costs a tree node and
//! two strings per label (about a kilobyte per endpoint, most of calc's memory).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use super::Labels;

/// Labels sorted by key, each key once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSet(Vec<(Arc<str>, Arc<str>)>);

impl LabelSet {
    pub const EMPTY: LabelSet = LabelSet(Vec::new());

    /// (key, value) pairs, in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.0.iter().map(|(key, value)| (&**key, &**value))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(key, _)| &**key)
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
        let at = self.0.binary_search_by(|(k, _)| (**k).cmp(key)).ok()?;
        Some(&self.0[at].1)
    }
}

/// Makes [`LabelSet`]s that share their strings; forgets strings no set uses any more.
#[derive(Debug, Default)]
pub struct LabelStrings {
    strings: HashSet<Arc<str>>,
    /// How many strings to hold before looking for unused ones: twice what was in use at
    /// the last look, so looking costs O(1) per string made.
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
                .map(|(key, value)| (self.share(key), self.share(value)))
                .collect(),
        )
    }

    fn share(&mut self, text: &str) -> Arc<str> {
        if let Some(shared) = self.strings.get(text) {
            return shared.clone();
        }
        if self.strings.len() >= self.purge_at {
            self.strings.retain(|string| Arc::strong_count(string) > 1);
            self.purge_at = (self.strings.len() * 2).max(MIN_PURGE);
        }
        let shared: Arc<str> = Arc::from(text);
        self.strings.insert(shared.clone());
        shared
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
    }
}
