//! Typo-tolerant matching, for routes that ask for it (`typos: true`), and the near misses
//! `explain` suggests.
//!
//! A keyword's word forgives edits by its length: none up to 4 letters (short words are too
//! close to each other: "job" and "jobs", "ride" and "rice"), one from 5, two from 9. Edits are
//! Damerau-Levenshtein (a swap of two neighbours is one): "asurance" and "insurnace" are both
//! one from "insurance". Owns: those rules. Must not decide routes: the router does.

/// Edits forgiven in a keyword word of `letters` letters.
pub fn allowance(letters: usize) -> usize {
    match letters {
        0..=4 => 0,
        5..=8 => 1,
        _ => 2,
    }
}

/// Whether the normalized `text` matches the normalized `keyword` word for word, each word
/// within its allowance; with `prefix`, `text` may go on after the keyword's words.
pub fn matches(text: &str, keyword: &str, prefix: bool) -> bool {
    let said: Vec<&str> = text.split(' ').collect();
    let wanted: Vec<&str> = keyword.split(' ').collect();
    if said.len() < wanted.len() || (!prefix && said.len() != wanted.len()) {
        return false;
    }
    wanted.iter().zip(&said).all(|(want, word)| {
        want == word || {
            let allowed = allowance(want.chars().count());
            allowed > 0 && strsim::damerau_levenshtein(want, word) <= allowed
        }
    })
}

/// Edits between two normalized texts.
pub fn distance(a: &str, b: &str) -> usize {
    strsim::damerau_levenshtein(a, b)
}

/// Whether `text` is close enough to `keyword` to be worth suggesting: at most two edits, and
/// no more than a third of the keyword.
pub fn near(text: &str, keyword: &str) -> Option<usize> {
    let edits = distance(text, keyword);
    (edits > 0 && edits <= 2 && edits * 3 <= keyword.chars().count()).then_some(edits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_words_forgive_a_typo_short_ones_none() {
        assert!(matches("insurnace", "insurance", false));
        assert!(matches("asurance", "assurance", false));
        assert!(matches("ubwishingzi", "ubwishingizi", false));
        assert!(!matches("jbos", "jobs", false), "4 letters forgive nothing");
        assert!(!matches("insurance please", "insurance", false));
        assert!(matches("insurnace please", "insurance", true));
        assert!(matches("frais scolaire", "frais scolaires", false));
        assert!(
            !matches("fraisxx scolaire", "frais scolaires", false),
            "every word within its own allowance"
        );
        assert!(
            matches("isurnace", "insurance", false),
            "two edits in nine letters"
        );
        assert!(
            !matches("isurnac", "insurance", false),
            "three edits is too many"
        );
        assert!(!matches("xyz", "insurance", false));
    }

    #[test]
    fn near_misses_are_a_few_edits_away() {
        assert_eq!(near("jbos", "jobs"), Some(1));
        assert_eq!(near("frais scolaire", "frais scolaires"), Some(1));
        assert_eq!(near("jobs", "jobs"), None);
        assert_eq!(near("taxi", "shop"), None);
        assert_eq!(
            near("ai", "au"),
            None,
            "a third of a two-letter word is no edit"
        );
    }
}
