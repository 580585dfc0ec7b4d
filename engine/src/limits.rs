//! WhatsApp Cloud API message limits (Meta's interactive-list and reply-button references, see
//! `tests/fixtures/FORMATS.md` §7.10). Lint checks literal template text against them; the
//! renderer cuts dynamic text to them.

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
