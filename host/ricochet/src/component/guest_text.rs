//! Text a guest chose, made fit to leave the sandbox.
//!
//! A guest decides the bytes of its log fields, of a `config-error`'s field and message, and —
//! through a name section — of the function names in a trap's backtrace. Those strings end up in
//! a terminal, a log file or a log pipeline. Left raw, a guest could print fake log lines (a
//! newline and a made-up backtrace frame), drive the terminal (`ESC[31m`, cursor moves),
//! reorder what a reader sees (Unicode bidirectional overrides), or write megabytes per line.
//! So every such string is cut to a length and has its control characters written as escapes.

/// The longest error message (trap, config error) that leaves the host, in bytes.
pub(crate) const MAX_MESSAGE_BYTES: usize = 1024;

/// Whether `c` must not reach a terminal or a log line raw: the C0 and C1 controls (newline,
/// carriage return, tab, `ESC`, `DEL`, …) and the invisible characters that reorder or hide
/// text (bidirectional overrides and isolates, zero-width characters, the byte order mark).
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// `text` on one line with its unsafe characters escaped (`\n`, `\u{1b}`, …) and cut to at
/// most `max_bytes` bytes, plus a note of how much was cut (`… (+N bytes)`).
pub(crate) fn sanitized(text: &str, max_bytes: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_bytes) + 32);
    for (at, c) in text.char_indices() {
        let escaped_len = if is_unsafe(c) {
            c.escape_default().len()
        } else {
            c.len_utf8()
        };
        if out.len() + escaped_len > max_bytes {
            out.push_str(&format!("… (+{} bytes)", text.len() - at));
            return out;
        }
        if is_unsafe(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `text` cut to at most `max_bytes` bytes, on a character boundary. For fields that a JSON
/// encoder escapes anyway (log fields): only their size needs bounding.
pub(crate) fn clipped(mut text: String, max_bytes: usize) -> String {
    if text.len() > max_bytes {
        let mut end = max_bytes;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_invisible_reordering_characters_are_escaped() {
        let hostile = "evil\n    1: 0x0 - fake_frame\u{1b}[31m red \u{202e}txt.exe\u{7f}";
        let clean = sanitized(hostile, MAX_MESSAGE_BYTES);
        assert_eq!(
            clean,
            "evil\\n    1: 0x0 - fake_frame\\u{1b}[31m red \\u{202e}txt.exe\\u{7f}"
        );
        assert!(!clean.chars().any(is_unsafe));
        // Ordinary text, non-ASCII included, is left alone.
        assert_eq!(sanitized("délai dépassé ✓", 64), "délai dépassé ✓");
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary_with_a_note() {
        let long = "é".repeat(10_000);
        let cut = sanitized(&long, 101);
        assert!(cut.starts_with(&"é".repeat(50)), "{cut}");
        assert!(cut.ends_with("… (+19900 bytes)"), "{cut}");
        // An escape is never split: it fits whole or not at all.
        let cut = sanitized("ab\u{1b}", 4);
        assert_eq!(cut, "ab… (+1 bytes)");
        assert_eq!(clipped("é".repeat(3), 5), "éé");
        assert_eq!(clipped("abc".into(), 5), "abc");
    }
}
