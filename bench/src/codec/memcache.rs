//! memcached's text protocol, for `memcache://` targets.
//!
//! Job: encode `version` (the ping), `get` and `set`, and scan their replies.
//! Invariant: a `get` hit is consumed only once its `END` line has arrived, so
//! one reply is always one request's complete answer.

use super::resp::push_decimal;
use super::{find_crlf, Outcome, ParseError, Request, Scanned, REPLY_BYTES_MAX};

pub fn encode(request: &Request<'_>, out: &mut Vec<u8>) {
    match request {
        Request::Ping => out.extend_from_slice(b"version\r\n"),
        Request::Get { key } => {
            out.extend_from_slice(b"get ");
            out.extend_from_slice(key);
            out.extend_from_slice(b"\r\n");
        }
        Request::Put {
            key,
            value,
            context: _,
        } => {
            out.extend_from_slice(b"set ");
            out.extend_from_slice(key);
            out.extend_from_slice(b" 0 0 ");
            push_decimal(out, value.len() as u64);
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Scans one reply at the front of `buf`.
pub fn scan(buf: &[u8]) -> Result<Option<Scanned>, ParseError> {
    let Some(line_end) = find_crlf(buf, 0)? else {
        return Ok(None);
    };
    let line = &buf[..line_end];
    let after_line = line_end + 2;
    let simple = |outcome| {
        Ok(Some(Scanned {
            consumed: after_line,
            outcome,
            value: None,
        }))
    };
    if line == b"STORED" {
        return simple(Outcome::Stored);
    }
    if line == b"END" {
        return simple(Outcome::Miss);
    }
    if line.starts_with(b"VERSION ") {
        return simple(Outcome::Pong);
    }
    if line == b"ERROR"
        || line == b"NOT_STORED"
        || line.starts_with(b"CLIENT_ERROR")
        || line.starts_with(b"SERVER_ERROR")
    {
        return simple(Outcome::ErrorReply);
    }
    if let Some(header) = line.strip_prefix(b"VALUE ") {
        // VALUE <key> <flags> <bytes> [<cas unique>]
        let text =
            std::str::from_utf8(header).map_err(|_| ParseError::Malformed("VALUE header"))?;
        let mut fields = text.split(' ');
        let (_key, _flags, bytes) = (fields.next(), fields.next(), fields.next());
        let len: usize = bytes
            .and_then(|b| b.parse().ok())
            .ok_or(ParseError::Malformed("VALUE without a byte count"))?;
        if len > REPLY_BYTES_MAX {
            return Err(ParseError::TooLarge(len));
        }
        let value_end = after_line + len;
        let end_line = b"\r\nEND\r\n";
        if buf.len() < value_end + end_line.len() {
            return Ok(None);
        }
        if &buf[value_end..value_end + end_line.len()] != end_line {
            return Err(ParseError::Malformed("VALUE block not followed by END"));
        }
        return Ok(Some(Scanned {
            consumed: value_end + end_line.len(),
            outcome: Outcome::Hit { siblings: 1 },
            value: Some(after_line..value_end),
        }));
    }
    Err(ParseError::Malformed("unknown memcached reply"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_text_commands() {
        let mut out = Vec::new();
        encode(&Request::Ping, &mut out);
        encode(&Request::Get { key: b"k" }, &mut out);
        encode(
            &Request::Put {
                key: b"k",
                value: b"abc",
                context: None,
            },
            &mut out,
        );
        assert_eq!(out, b"version\r\nget k\r\nset k 0 0 3\r\nabc\r\n");
    }

    #[test]
    fn scans_every_reply_kind() {
        assert_eq!(
            scan(b"STORED\r\n").unwrap().unwrap().outcome,
            Outcome::Stored
        );
        assert_eq!(scan(b"END\r\n").unwrap().unwrap().outcome, Outcome::Miss);
        assert_eq!(
            scan(b"VERSION 1.6.9\r\n").unwrap().unwrap().outcome,
            Outcome::Pong
        );
        assert_eq!(
            scan(b"SERVER_ERROR out of memory\r\n")
                .unwrap()
                .unwrap()
                .outcome,
            Outcome::ErrorReply
        );
        let s = scan(b"VALUE k 0 3\r\nabc\r\nEND\r\nSTORED\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(s.consumed, 23);
        assert_eq!(s.value, Some(13..16));
        let s = scan(b"VALUE k 0 4 99\r\na\r\nb\r\nEND\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(s.value, Some(16..20));
    }

    #[test]
    fn partial_replies_wait_for_more_bytes() {
        let full = b"VALUE key 0 5\r\nhello\r\nEND\r\n";
        assert!(scan(full).unwrap().is_some());
        for cut in 0..full.len() {
            assert_eq!(scan(&full[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn malformed_replies_are_errors() {
        assert!(scan(b"HELLO\r\n").is_err());
        assert!(scan(b"VALUE k 0\r\n").is_err());
        assert!(scan(b"VALUE k 0 3\r\nabcXXXXXXX").is_err());
    }
}
