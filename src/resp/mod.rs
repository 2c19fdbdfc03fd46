//! The Redis protocol front end's pure half: a bounded, incremental command
//! parser and a reply encoder for RESP2 and RESP3 (chosen per connection by
//! `HELLO`). No sockets, no clocks; the glommio
//! connection task that uses it is `runtime/resp.rs`, and docs/resp.md is the
//! user's page.
//!
//! A command arrives either as a multi-bulk array (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`,
//! what every client library sends) or as an inline line (`GET k\r\n`, what
//! `telnet` and `redis-cli` in some modes send). [`RespParser::parse`] looks
//! at the bytes read so far and answers "a complete command", "not yet"
//! (incomplete is an expected outcome, as in mini-redis) or a protocol
//! error after which the connection is closed, because a stream with a bad
//! length cannot be re-synchronised.
//!
//! Invariant: nothing is allocated from a length the peer sent before that
//! length has been checked against [`RespLimits`]; argument vectors grow
//! only as arguments actually arrive, and a whole command never exceeds
//! `command_bytes_max`.

use bytes::{Bytes, BytesMut};

/// Bounds on one command, derived from the server's key, value and frame
/// limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RespLimits {
    /// Most arguments in one command (the command name counts).
    pub args_max: usize,
    /// Largest single bulk string.
    pub bulk_bytes_max: usize,
    /// Largest whole command on the wire.
    pub command_bytes_max: usize,
    /// Longest inline command line, and longest `*`/`$` header line.
    pub inline_bytes_max: usize,
}

impl RespLimits {
    /// Limits for a server whose values may be `value_bytes_max` long and
    /// whose binary frames may be `frame_bytes_max` long.
    pub fn for_server(value_bytes_max: usize, frame_bytes_max: usize) -> RespLimits {
        RespLimits {
            args_max: 1024,
            // A DYN.PUT context is hex, twice the binary context's size.
            bulk_bytes_max: value_bytes_max.max(2 * crate::protocol::CONTEXT_BYTES_MAX),
            command_bytes_max: frame_bytes_max,
            inline_bytes_max: 64 * 1024,
        }
    }
}

/// Why a byte stream is not valid RESP; the connection answers once and
/// closes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RespError {
    /// A `*` or `$` header that is not a decimal number in range.
    BadLength(String),
    /// A bulk string not followed by CRLF.
    MissingCrlf,
    /// More arguments than `args_max`.
    TooManyArgs { count: i64, max: usize },
    /// A bulk string over `bulk_bytes_max`.
    BulkTooLarge { bytes: i64, max: usize },
    /// A command over `command_bytes_max`, or a line over `inline_bytes_max`.
    CommandTooLarge { max: usize },
    /// An inline command with an unbalanced quote.
    UnbalancedQuotes,
}

impl std::fmt::Display for RespError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RespError::BadLength(what) => write!(f, "Protocol error: invalid {what}"),
            RespError::MissingCrlf => write!(f, "Protocol error: expected '\\r\\n'"),
            RespError::TooManyArgs { count, max } => {
                write!(f, "Protocol error: {count} arguments, at most {max}")
            }
            RespError::BulkTooLarge { bytes, max } => write!(
                f,
                "Protocol error: bulk string of {bytes} bytes, at most {max}"
            ),
            RespError::CommandTooLarge { max } => {
                write!(f, "Protocol error: command longer than {max} bytes")
            }
            RespError::UnbalancedQuotes => {
                write!(f, "Protocol error: unbalanced quotes in request")
            }
        }
    }
}

/// The incremental parser: stateless apart from its limits, it re-examines
/// the buffered bytes on each call (a command is small next to its limits'
/// cost of re-scanning, and there is no partial state to get wrong).
#[derive(Clone, Debug)]
pub struct RespParser {
    limits: RespLimits,
}

impl RespParser {
    /// A parser enforcing `limits`.
    pub fn new(limits: RespLimits) -> RespParser {
        RespParser { limits }
    }

    /// Takes one complete command off the front of `buf`. `Ok(None)`: more
    /// bytes are needed (and `buf` is untouched). An empty command (a blank
    /// inline line, or `*0`) is consumed and returned as an empty vector.
    pub fn parse(&self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, RespError> {
        if buf.is_empty() {
            return Ok(None);
        }
        if buf[0] == b'*' {
            self.parse_multibulk(buf)
        } else {
            self.parse_inline(buf)
        }
    }

    fn parse_multibulk(&self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, RespError> {
        let limits = &self.limits;
        let Some((count, mut at)) = header(buf, 0, limits.inline_bytes_max)? else {
            return Ok(None);
        };
        if count > limits.args_max as i64 {
            return Err(RespError::TooManyArgs {
                count,
                max: limits.args_max,
            });
        }
        if count < 0 {
            return Err(RespError::BadLength("multibulk length".into()));
        }
        // First pass: find where each argument lies, without copying.
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for _ in 0..count {
            if at >= buf.len() {
                return self.incomplete(buf);
            }
            if buf[at] != b'$' {
                return Err(RespError::BadLength(format!(
                    "bulk header: expected '$', got '{}'",
                    char::from(buf[at]).escape_default()
                )));
            }
            let Some((length, start)) = header(buf, at, limits.inline_bytes_max)? else {
                return self.incomplete(buf);
            };
            if length < 0 {
                return Err(RespError::BadLength("bulk length".into()));
            }
            if length > limits.bulk_bytes_max as i64 {
                return Err(RespError::BulkTooLarge {
                    bytes: length,
                    max: limits.bulk_bytes_max,
                });
            }
            let end = start + length as usize;
            if end + 2 > limits.command_bytes_max {
                return Err(RespError::CommandTooLarge {
                    max: limits.command_bytes_max,
                });
            }
            if buf.len() < end + 2 {
                return self.incomplete(buf);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(RespError::MissingCrlf);
            }
            spans.push((start, end));
            at = end + 2;
        }
        let frozen = buf.split_to(at).freeze();
        Ok(Some(
            spans
                .into_iter()
                .map(|(start, end)| frozen.slice(start..end))
                .collect(),
        ))
    }

    /// Not complete yet; but a peer may not make us buffer more than one
    /// command's worth.
    fn incomplete(&self, buf: &BytesMut) -> Result<Option<Vec<Bytes>>, RespError> {
        if buf.len() > self.limits.command_bytes_max {
            return Err(RespError::CommandTooLarge {
                max: self.limits.command_bytes_max,
            });
        }
        Ok(None)
    }

    fn parse_inline(&self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, RespError> {
        let max = self.limits.inline_bytes_max;
        let Some(newline) = buf.iter().take(max + 1).position(|&b| b == b'\n') else {
            if buf.len() > max {
                return Err(RespError::CommandTooLarge { max });
            }
            return Ok(None);
        };
        let line = buf.split_to(newline + 1);
        let mut line = &line[..newline];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        let args = split_inline(line)?;
        if args.len() > self.limits.args_max {
            return Err(RespError::TooManyArgs {
                count: args.len() as i64,
                max: self.limits.args_max,
            });
        }
        Ok(Some(args))
    }
}

/// Reads a `*N\r\n` or `$N\r\n` header at `at`: the number and the offset
/// after its CRLF, or `None` when the line is not complete yet.
fn header(buf: &[u8], at: usize, line_max: usize) -> Result<Option<(i64, usize)>, RespError> {
    let rest = &buf[at + 1..];
    let Some(cr) = rest.iter().take(line_max).position(|&b| b == b'\r') else {
        if rest.len() >= line_max {
            return Err(RespError::CommandTooLarge { max: line_max });
        }
        return Ok(None);
    };
    if rest.len() < cr + 2 {
        return Ok(None);
    }
    if rest[cr + 1] != b'\n' {
        return Err(RespError::MissingCrlf);
    }
    let digits = &rest[..cr];
    // At most 18 digits: no overflow, and longer is out of every limit anyway.
    let valid = !digits.is_empty()
        && digits.len() <= 18
        && (digits[0] == b'-' && digits.len() > 1 || digits[0].is_ascii_digit())
        && digits[1..].iter().all(u8::is_ascii_digit);
    if !valid {
        return Err(RespError::BadLength(format!(
            "length '{}'",
            String::from_utf8_lossy(&digits[..digits.len().min(32)])
        )));
    }
    let text = std::str::from_utf8(digits).map_err(|_| RespError::BadLength("length".into()))?;
    let number: i64 = text
        .parse()
        .map_err(|_| RespError::BadLength("length".into()))?;
    Ok(Some((number, at + 1 + cr + 2)))
}

/// Splits an inline command on blanks, honouring `"…"` (with `\\`, `\"`,
/// `\n`, `\r`, `\t`, `\xHH` escapes) and `'…'` as Redis does.
fn split_inline(line: &[u8]) -> Result<Vec<Bytes>, RespError> {
    let mut args = Vec::new();
    let mut i = 0;
    while i < line.len() {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == line.len() {
            break;
        }
        let mut arg = Vec::new();
        match line[i] {
            b'"' => {
                i += 1;
                loop {
                    match line.get(i) {
                        None => return Err(RespError::UnbalancedQuotes),
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') => {
                            let escaped = *line.get(i + 1).ok_or(RespError::UnbalancedQuotes)?;
                            i += 2;
                            let hex = |b: u8| (b as char).to_digit(16);
                            match escaped {
                                b'n' => arg.push(b'\n'),
                                b'r' => arg.push(b'\r'),
                                b't' => arg.push(b'\t'),
                                b'x' => match (
                                    line.get(i).copied().and_then(hex),
                                    line.get(i + 1).copied().and_then(hex),
                                ) {
                                    (Some(h), Some(l)) => {
                                        arg.push((h * 16 + l) as u8);
                                        i += 2;
                                    }
                                    _ => arg.push(b'x'),
                                },
                                other => arg.push(other),
                            }
                        }
                        Some(&b) => {
                            arg.push(b);
                            i += 1;
                        }
                    }
                }
            }
            b'\'' => {
                i += 1;
                loop {
                    match line.get(i) {
                        None => return Err(RespError::UnbalancedQuotes),
                        Some(b'\'') => {
                            i += 1;
                            break;
                        }
                        Some(&b) => {
                            arg.push(b);
                            i += 1;
                        }
                    }
                }
            }
            _ => {
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    arg.push(line[i]);
                    i += 1;
                }
            }
        }
        args.push(Bytes::from(arg));
    }
    Ok(args)
}

/// The reply protocol a connection speaks: RESP2 until the client sends
/// `HELLO 3`. Only the types RESP2 lacks differ; simple strings, errors,
/// integers, bulk strings and arrays are written the same in both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// RESP2: nulls are `$-1`, maps are flat arrays, text is a bulk string.
    #[default]
    Resp2,
    /// RESP3: `_` nulls, `%` maps, `~` sets and `=` verbatim strings.
    Resp3,
}

impl Protocol {
    /// The number `HELLO` reports as `proto`.
    pub fn version(self) -> i64 {
        match self {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        }
    }
}

/// Appends replies to an output buffer.
pub mod reply {
    use super::Protocol;

    /// `+OK`-style status.
    pub fn simple(out: &mut Vec<u8>, text: &str) {
        out.push(b'+');
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    /// `-ERR …`; CR and LF in `text` are replaced so the reply stays one line.
    pub fn error(out: &mut Vec<u8>, text: &str) {
        out.push(b'-');
        out.extend(
            text.bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
        out.extend_from_slice(b"\r\n");
    }

    /// `:N`.
    pub fn integer(out: &mut Vec<u8>, n: i64) {
        out.extend_from_slice(format!(":{n}\r\n").as_bytes());
    }

    /// `$N` and the bytes.
    pub fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(format!("${}\r\n", bytes.len()).as_bytes());
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
    }

    /// The RESP2 null bulk string `$-1`.
    pub fn nil(out: &mut Vec<u8>) {
        out.extend_from_slice(b"$-1\r\n");
    }

    /// A missing value: `$-1` in RESP2, `_` in RESP3.
    pub fn null(out: &mut Vec<u8>, protocol: Protocol) {
        match protocol {
            Protocol::Resp2 => nil(out),
            Protocol::Resp3 => out.extend_from_slice(b"_\r\n"),
        }
    }

    /// An array header `*N`; the caller appends the N elements.
    pub fn array(out: &mut Vec<u8>, len: usize) {
        out.extend_from_slice(format!("*{len}\r\n").as_bytes());
    }

    /// A map header for `pairs` key/value pairs: `%N` in RESP3, an array
    /// of `2N` alternating keys and values in RESP2. The caller appends
    /// key, value, key, value….
    pub fn map(out: &mut Vec<u8>, pairs: usize, protocol: Protocol) {
        match protocol {
            Protocol::Resp2 => array(out, pairs * 2),
            Protocol::Resp3 => out.extend_from_slice(format!("%{pairs}\r\n").as_bytes()),
        }
    }

    /// A set header: `~N` in RESP3, an array in RESP2.
    pub fn set(out: &mut Vec<u8>, len: usize, protocol: Protocol) {
        match protocol {
            Protocol::Resp2 => array(out, len),
            Protocol::Resp3 => out.extend_from_slice(format!("~{len}\r\n").as_bytes()),
        }
    }

    /// Human-readable text (INFO): a verbatim string `=N\r\ntxt:…` in
    /// RESP3, which clients print as is; a bulk string in RESP2.
    pub fn text(out: &mut Vec<u8>, text: &str, protocol: Protocol) {
        match protocol {
            Protocol::Resp2 => bulk(out, text.as_bytes()),
            Protocol::Resp3 => {
                out.extend_from_slice(format!("={}\r\ntxt:", text.len() + 4).as_bytes());
                out.extend_from_slice(text.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
    }
}

/// Lower-case hex of `bytes` (how DYN.GET shows a context, so it can be
/// typed back into DYN.PUT).
pub fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        text.push(DIGITS[usize::from(b >> 4)] as char);
        text.push(DIGITS[usize::from(b & 15)] as char);
    }
    text
}

/// Parses hex (either case); `None` for odd length or a non-hex digit.
pub fn hex_decode(text: &[u8]) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    text.chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// The deterministic winner among live sibling values for a plain GET: the
/// greatest value in byte order (every replica and every client picks the
/// same one, whatever order the siblings arrived in). `None` when no sibling
/// is live.
pub fn deterministic_winner<'a>(live: impl Iterator<Item = &'a Bytes>) -> Option<&'a Bytes> {
    live.max_by(|a, b| a.as_ref().cmp(b.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> RespLimits {
        RespLimits {
            args_max: 8,
            bulk_bytes_max: 16,
            command_bytes_max: 64,
            inline_bytes_max: 32,
        }
    }

    fn parse_all(input: &[u8]) -> Result<Vec<Vec<Bytes>>, RespError> {
        let parser = RespParser::new(limits());
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(cmd) = parser.parse(&mut buf)? {
            out.push(cmd);
        }
        Ok(out)
    }

    #[test]
    fn multibulk_and_inline_commands_parse_and_pipeline() {
        let cmds =
            parse_all(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nSET  a \"b c\\x41\" 'd'\r\nPING\n").unwrap();
        assert_eq!(cmds.len(), 3);
        assert_eq!(cmds[0], vec![Bytes::from("GET"), Bytes::from("k")]);
        assert_eq!(
            cmds[1],
            vec![
                Bytes::from("SET"),
                Bytes::from("a"),
                Bytes::from("b cA"),
                Bytes::from("d")
            ]
        );
        assert_eq!(cmds[2], vec![Bytes::from("PING")]);
    }

    #[test]
    fn every_prefix_of_a_command_is_incomplete_not_an_error() {
        let wire = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n";
        let parser = RespParser::new(limits());
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            assert_eq!(parser.parse(&mut buf), Ok(None), "cut at {cut}");
            assert_eq!(buf.len(), cut, "an incomplete command is left in place");
        }
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(parser.parse(&mut buf).unwrap().unwrap().len(), 3);
        assert!(buf.is_empty());
    }

    #[test]
    fn lengths_past_the_limits_are_refused_before_any_allocation() {
        assert!(matches!(
            parse_all(b"*9999999999\r\n"),
            Err(RespError::TooManyArgs { .. })
        ));
        assert!(matches!(
            parse_all(b"*1\r\n$999999999999\r\n"),
            Err(RespError::BulkTooLarge { .. })
        ));
        assert!(matches!(
            parse_all(b"*1\r\n$99999999999999999999999\r\n"),
            Err(RespError::BadLength(_))
        ));
        assert!(matches!(
            parse_all(b"*1\r\n$-5\r\n"),
            Err(RespError::BadLength(_))
        ));
        assert!(matches!(
            parse_all(b"*1\r\n$x\r\n"),
            Err(RespError::BadLength(_))
        ));
        assert!(matches!(
            parse_all(b"*2\r\n$3\r\nGETxx"),
            Err(RespError::MissingCrlf)
        ));
        // Four bulks of 16 bytes exceed the 64-byte command bound.
        let mut big = b"*4\r\n".to_vec();
        for _ in 0..4 {
            big.extend_from_slice(b"$16\r\n0123456789abcdef\r\n");
        }
        assert!(matches!(
            parse_all(&big),
            Err(RespError::CommandTooLarge { .. })
        ));
        // An endless inline line or header line is cut off at its bound.
        assert!(matches!(
            parse_all(&[b'a'; 40]),
            Err(RespError::CommandTooLarge { .. })
        ));
        assert!(matches!(
            parse_all(&[b'*'; 40]),
            Err(RespError::CommandTooLarge { .. })
        ));
        assert!(matches!(
            parse_all(b"GET \"k\r\n"),
            Err(RespError::UnbalancedQuotes)
        ));
    }

    #[test]
    fn empty_commands_are_consumed() {
        let cmds = parse_all(b"\r\n*0\r\nPING\r\n").unwrap();
        assert_eq!(cmds, vec![vec![], vec![], vec![Bytes::from("PING")]]);
    }

    #[test]
    fn replies_and_hex_round_trip() {
        let mut out = Vec::new();
        reply::simple(&mut out, "OK");
        reply::error(&mut out, "ERR a\r\nb");
        reply::integer(&mut out, -3);
        reply::bulk(&mut out, b"x\r\n");
        reply::nil(&mut out);
        reply::array(&mut out, 2);
        assert_eq!(
            out,
            b"+OK\r\n-ERR a  b\r\n:-3\r\n$3\r\nx\r\n\r\n$-1\r\n*2\r\n"
        );
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex_encode(&bytes), "0001abff");
        assert_eq!(hex_decode(b"0001ABff").unwrap(), bytes);
        assert_eq!(hex_decode(b"abc"), None);
        assert_eq!(hex_decode(b"zz"), None);
    }

    #[test]
    fn resp3_types_and_their_resp2_fallbacks() {
        let mut two = Vec::new();
        let mut three = Vec::new();
        for (out, protocol) in [(&mut two, Protocol::Resp2), (&mut three, Protocol::Resp3)] {
            reply::null(out, protocol);
            reply::map(out, 2, protocol);
            reply::set(out, 1, protocol);
            reply::text(out, "a:1\r\n", protocol);
        }
        assert_eq!(two, b"$-1\r\n*4\r\n*1\r\n$5\r\na:1\r\n\r\n".to_vec());
        // The verbatim length counts the `txt:` prefix and the text.
        assert_eq!(three, b"_\r\n%2\r\n~1\r\n=9\r\ntxt:a:1\r\n\r\n".to_vec());
        assert_eq!(Protocol::default(), Protocol::Resp2);
        assert_eq!(
            (Protocol::Resp2.version(), Protocol::Resp3.version()),
            (2, 3)
        );
    }

    #[test]
    fn the_winner_does_not_depend_on_sibling_order() {
        let a = [
            Bytes::from("apple"),
            Bytes::from("pear"),
            Bytes::from("fig"),
        ];
        let b = [
            Bytes::from("fig"),
            Bytes::from("apple"),
            Bytes::from("pear"),
        ];
        assert_eq!(deterministic_winner(a.iter()), Some(&Bytes::from("pear")));
        assert_eq!(deterministic_winner(b.iter()), Some(&Bytes::from("pear")));
        assert_eq!(deterministic_winner([].iter()), None);
    }
}
