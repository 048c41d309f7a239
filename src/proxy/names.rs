//! Prefixed names within the 64-character budget model providers enforce, and the cursor that
//! pages across backends.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// The longest tool name model providers accept.
pub(crate) const MAX_NAME: usize = 64;

/// Maps prefixed names back to (backend index, original name).
#[derive(Debug, Default)]
pub(crate) struct Names {
    aliases: HashMap<String, (usize, String)>,
}

impl Names {
    /// `{namespace}{sep}{name}`, shortened with a stable hash when longer than 64 characters.
    pub(crate) fn prefixed(
        &mut self,
        index: usize,
        namespace: &str,
        sep: &str,
        name: &str,
    ) -> String {
        let full = format!("{namespace}{sep}{name}");
        if full.chars().count() <= MAX_NAME {
            return full;
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        full.hash(&mut hasher);
        let suffix = format!("_{:08x}", hasher.finish() as u32);
        let keep: String = full.chars().take(MAX_NAME - suffix.len()).collect();
        let short = format!("{keep}{suffix}");
        self.aliases.insert(short.clone(), (index, name.to_owned()));
        short
    }

    /// The backend and original name of a prefixed name.
    pub(crate) fn resolve<'a, 'n>(
        &'a self,
        namespaces: impl Iterator<Item = &'n str>,
        sep: &str,
        prefixed: &'a str,
    ) -> Option<(usize, &'a str)> {
        if let Some((index, name)) = self.aliases.get(prefixed) {
            return Some((*index, name));
        }
        resolve_unshortened(namespaces, sep, prefixed)
    }
}

/// Whether `prefixed` may be a shortened name: each is exactly [`MAX_NAME`] characters, so a
/// shorter name resolves by its prefix alone ([`resolve_unshortened`]), without the session's
/// names (and the lock around them).
pub(crate) fn may_be_shortened(prefixed: &str) -> bool {
    // Bytes, not characters: never fewer, so no shortened name is missed.
    prefixed.len() >= MAX_NAME
}

/// The backend and original name of a name that was not shortened: `{namespace}{sep}{name}`.
pub(crate) fn resolve_unshortened<'a, 'n>(
    namespaces: impl Iterator<Item = &'n str>,
    sep: &str,
    prefixed: &'a str,
) -> Option<(usize, &'a str)> {
    namespaces.enumerate().find_map(|(i, ns)| {
        let rest = prefixed.strip_prefix(ns)?.strip_prefix(sep)?;
        (!rest.is_empty()).then_some((i, rest))
    })
}

/// The gateway's list cursor: the backends still to page and their own cursors.
pub(crate) fn encode_cursor(pages: &[(usize, String)]) -> String {
    format!("gw1:{}", serde_json::to_string(pages).unwrap_or_default())
}

/// Reads a cursor made by [`encode_cursor`]; `None` for anything else.
pub(crate) fn decode_cursor(cursor: &str) -> Option<Vec<(usize, String)>> {
    serde_json::from_str(cursor.strip_prefix("gw1:")?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_stay_within_the_budget_and_resolve() {
        let mut names = Names::default();
        let long = "a".repeat(80);
        let short = names.prefixed(1, "files", "__", &long);
        assert_eq!(short.chars().count(), MAX_NAME);
        assert!(may_be_shortened(&short));
        assert!(!may_be_shortened("files__echo"));
        let multibyte = format!("files__{}", "é".repeat(40));
        let kept = names.prefixed(1, "files", "__", &"é".repeat(40));
        assert_eq!(kept, multibyte, "47 characters are not shortened");
        assert!(may_be_shortened(&kept), "87 bytes: looked up, harmlessly");
        assert_eq!(
            names.resolve(["x", "files"].into_iter(), "__", &short),
            Some((1, long.as_str()))
        );
        assert_eq!(names.prefixed(0, "x", "__", "echo"), "x__echo");
        assert_eq!(
            names.resolve(["x", "files"].into_iter(), "__", "files__read__me"),
            Some((1, "read__me"))
        );
        assert_eq!(names.resolve(["x"].into_iter(), "__", "x__"), None);
        assert_eq!(names.resolve(["x"].into_iter(), "__", "nope"), None);
    }

    #[test]
    fn cursors_round_trip_and_reject_strangers() {
        let pages = vec![(0, "abc".to_owned()), (2, "\"q\"".to_owned())];
        assert_eq!(decode_cursor(&encode_cursor(&pages)), Some(pages));
        assert_eq!(decode_cursor("somebody-elses"), None);
    }
}
