//! WhatsApp Cloud API message limits (Meta's interactive-list and reply-button references, see
//! `tests/fixtures/FORMATS.md` §7.10), how text is measured against them, and where it may be
//! cut. Lint checks literal template text against them; the renderer cuts dynamic text to them.
//!
//! How Meta counts: its references give every limit in "characters" and never say which
//! (code points, UTF-16 code units as its JavaScript clients measure, or what a person sees),
//! and no error code tells them apart (FORMATS.md: "exact error code for each limit not
//! verified"). So the engine counts UTF-16 code units, the largest of the three for any text:
//! a text within a limit so counted is within it however Meta counts, and the price is that
//! emoji-heavy text is cut a little early (👍 counts 2, a family emoji 11). Cuts fall between
//! grapheme clusters (Unicode's extended grapheme clusters, UAX #29), so a cut never leaves half
//! an emoji sequence, a flag's lone regional indicator, or a letter without its combining
//! accent (Kinyarwanda written with decomposed accents, Arabic with its vowel marks).

use std::borrow::Cow;

use unicode_segmentation::UnicodeSegmentation as _;

/// Text message body, characters.
pub const TEXT_BODY: usize = 4096;
/// Interactive list body.
pub const LIST_BODY: usize = 4096;
/// Reply-buttons body.
pub const BUTTONS_BODY: usize = 1024;
/// Location-request body.
pub const LOCATION_BODY: usize = 1024;
/// Interactive header text.
pub const HEADER: usize = 60;
/// Interactive footer text.
pub const FOOTER: usize = 60;
/// Label of the button that opens a list.
pub const LIST_BUTTON: usize = 20;
/// List section title.
pub const SECTION_TITLE: usize = 24;
/// List row title.
pub const ROW_TITLE: usize = 24;
/// List row description.
pub const ROW_DESCRIPTION: usize = 72;
/// List row id.
pub const ROW_ID: usize = 200;
/// Reply button title.
pub const BUTTON_TITLE: usize = 20;
/// Reply button id.
pub const BUTTON_ID: usize = 256;
/// Rows in one list message, across all sections.
pub const MAX_ROWS: usize = 10;
/// Sections in one list message.
pub const MAX_SECTIONS: usize = 10;
/// Reply buttons in one message.
pub const MAX_BUTTONS: usize = 3;

/// The length of `text` as the limits count it: UTF-16 code units (see the module comment).
pub fn length(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}

/// `text` within `limit` (as [`length`] counts), cut between grapheme clusters and ending with
/// `…` when it had to be cut.
pub fn cut(text: &str, limit: usize) -> Cow<'_, str> {
    if length(text) <= limit {
        return Cow::Borrowed(text);
    }
    // The ellipsis is one unit.
    let mut room = limit.saturating_sub(1);
    let mut end = 0;
    for (at, grapheme) in text.grapheme_indices(true) {
        let size = length(grapheme);
        if size > room {
            break;
        }
        room -= size;
        end = at + grapheme.len();
    }
    let mut out = text[..end].trim_end().to_owned();
    out.push('…');
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_count_utf16_units() {
        assert_eq!(length("Murakaza neza"), 13);
        assert_eq!(length("é"), 1);
        assert_eq!(length("e\u{301}"), 2);
        assert_eq!(length("👍"), 2);
        assert_eq!(length("👨‍👩‍👧‍👦"), 11);
        assert_eq!(length("🇷🇼"), 4);
    }

    #[test]
    fn cuts_fall_between_graphemes_and_fit_the_limit() {
        let cases: &[(&str, usize, &str)] = &[
            ("short", 24, "short"),
            (
                "Ubwishingizi bw'ibinyabiziga n'ubuzima",
                24,
                "Ubwishingizi bw'ibinyab…",
            ),
            // An emoji sequence is kept whole or left out, never split.
            ("Akazi 👨‍👩‍👧‍👦 keza", 12, "Akazi…"),
            ("Akazi 👨‍👩‍👧‍👦 keza", 18, "Akazi 👨‍👩‍👧‍👦…"),
            ("🇷🇼🇷🇼🇷🇼", 9, "🇷🇼🇷🇼…"),
            ("👍👍👍👍", 4, "👍…"),
            // A decomposed accent stays with its letter (Kinyarwanda, French).
            ("Cafe\u{301} cafe\u{301}", 6, "Cafe\u{301}…"),
            ("Cafe\u{301} cafe\u{301}", 5, "Caf…"),
            // Arabic with its vowel marks, right to left: a mark is never cut from its letter.
            ("مَرْحَبًا بِكُمْ", 6, "مَرْ…"),
            ("ééééé", 3, "éé…"),
        ];
        for (text, limit, expected) in cases {
            let cut = cut(text, *limit);
            assert_eq!(cut, *expected, "{text:?} to {limit}");
            assert!(length(&cut) <= *limit, "{cut:?} over {limit}");
            let whole: Vec<&str> = text.graphemes(true).collect();
            let kept: Vec<&str> = cut.trim_end_matches('…').graphemes(true).collect();
            assert!(
                kept.iter().zip(&whole).all(|(k, w)| k == w),
                "{cut:?} splits a grapheme of {text:?}"
            );
        }
    }
}
