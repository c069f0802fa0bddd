//! Showing text that came from data (scenario and request names, URLs, error messages)
//! safely: escaped for HTML, and with control characters made visible on a terminal,
//! so a name can neither inject markup into a report nor drive the terminal.

use std::fmt::Write as _;

/// `text` for HTML element content and quoted attribute values.
pub fn html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if shown_escaped(c) => {
                let _ = write!(out, "&#x{:x};", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// `text` for a terminal: control characters (ESC of ANSI sequences, CR, LF, C1
/// controls) and bidirectional overrides become visible escapes (`\x1b`, `\u{202e}`).
pub fn visible(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if shown_escaped(c) {
            match u32::from(c) {
                n @ 0..=0x7f => {
                    let _ = write!(out, "\\x{n:02x}");
                }
                n => {
                    let _ = write!(out, "\\u{{{n:x}}}");
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Control characters and the invisible characters that reorder a line.
fn shown_escaped(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_control_characters_are_escaped() {
        assert_eq!(
            html("<img src=x onerror='a(1)'> & \"q\""),
            "&lt;img src=x onerror=&#39;a(1)&#39;&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(html("a\x1bb"), "a&#x1b;b");
        assert_eq!(visible("\x1b[31mred\r\n"), "\\x1b[31mred\\x0d\\x0a");
        assert_eq!(visible("\u{9b}2J \u{202e}ab"), "\\u{9b}2J \\u{202e}ab");
        assert_eq!(visible("Café — ok"), "Café — ok");
    }
}
