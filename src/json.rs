//! The one JSON string encoder of the project: the CLI's `--json` lines, the
//! admin replies and the benchmark tool's reports write JSON by hand, and all
//! of them quote text through [`string`].

use std::fmt::Write as _;

/// `text` as a JSON string literal, quotes included, with `"`, `\` and every
/// control character escaped.
pub fn string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_quotes_backslashes_and_control_characters() {
        assert_eq!(super::string("plain"), "\"plain\"");
        assert_eq!(super::string("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(super::string("l1\nl2\t\u{1}"), "\"l1\\nl2\\t\\u0001\"");
        assert_eq!(super::string("µs"), "\"µs\"");
    }
}
