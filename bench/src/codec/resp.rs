//! RESP (the Redis serialization protocol), for `redis://` targets.
//!
//! Job: encode PING, GET and SET as RESP arrays of bulk strings and scan the
//! replies those commands produce (simple strings, errors, integers, bulk
//! strings, RESP2 and RESP3 nulls). Invariant: a reply is consumed only when
//! all of it, including the bulk string's trailing CRLF, is in the buffer.

use super::{find_crlf, Outcome, ParseError, Request, Scanned, REPLY_BYTES_MAX};

fn push_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'$');
    push_decimal(out, bytes.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// Appends a decimal number without going through `fmt`, which is slow on the
/// per-request path.
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

pub fn encode(request: &Request<'_>, out: &mut Vec<u8>) {
    match request {
        Request::Ping => out.extend_from_slice(b"*1\r\n$4\r\nPING\r\n"),
        Request::Get { key } => {
            out.extend_from_slice(b"*2\r\n$3\r\nGET\r\n");
            push_bulk(out, key);
        }
        Request::Put {
            key,
            value,
            context: _,
        } => {
            out.extend_from_slice(b"*3\r\n$3\r\nSET\r\n");
            push_bulk(out, key);
            push_bulk(out, value);
        }
    }
}

fn parse_signed(digits: &[u8]) -> Result<i64, ParseError> {
    let text =
        std::str::from_utf8(digits).map_err(|_| ParseError::Malformed("length not ASCII"))?;
    text.parse()
        .map_err(|_| ParseError::Malformed("length not a number"))
}

/// Scans one reply at the front of `buf`.
pub fn scan(buf: &[u8]) -> Result<Option<Scanned>, ParseError> {
    let Some(line_end) = find_crlf(buf, 0)? else {
        return Ok(None);
    };
    if line_end == 0 {
        return Err(ParseError::Malformed("empty line"));
    }
    let line = &buf[1..line_end];
    let after_line = line_end + 2;
    let simple = |outcome| {
        Ok(Some(Scanned {
            consumed: after_line,
            outcome,
            value: None,
        }))
    };
    match buf[0] {
        b'+' if line == b"PONG" => simple(Outcome::Pong),
        b'+' | b':' => simple(Outcome::Stored),
        b'-' => simple(Outcome::ErrorReply),
        b'_' => simple(Outcome::Miss),
        b'$' => {
            let len = parse_signed(line)?;
            if len == -1 {
                return simple(Outcome::Miss);
            }
            if len < 0 {
                return Err(ParseError::Malformed("negative bulk length"));
            }
            let len = len as usize;
            if len > REPLY_BYTES_MAX {
                return Err(ParseError::TooLarge(len));
            }
            let end = after_line + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ParseError::Malformed("bulk string without CRLF"));
            }
            Ok(Some(Scanned {
                consumed: end + 2,
                outcome: Outcome::Hit { siblings: 1 },
                value: Some(after_line..end),
            }))
        }
        _ => Err(ParseError::Malformed("unexpected RESP type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_commands_as_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode(&Request::Ping, &mut out);
        encode(&Request::Get { key: b"k1" }, &mut out);
        encode(
            &Request::Put {
                key: b"k1",
                value: b"hello",
                context: None,
            },
            &mut out,
        );
        assert_eq!(
            out,
            b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$2\r\nk1\r\n*3\r\n$3\r\nSET\r\n$2\r\nk1\r\n$5\r\nhello\r\n"
        );
    }

    #[test]
    fn scans_every_reply_kind() {
        let s = scan(b"+PONG\r\n").unwrap().unwrap();
        assert_eq!((s.consumed, s.outcome), (7, Outcome::Pong));
        assert_eq!(scan(b"+OK\r\n").unwrap().unwrap().outcome, Outcome::Stored);
        assert_eq!(
            scan(b"-ERR no\r\n").unwrap().unwrap().outcome,
            Outcome::ErrorReply
        );
        assert_eq!(scan(b"$-1\r\n").unwrap().unwrap().outcome, Outcome::Miss);
        assert_eq!(scan(b"_\r\n").unwrap().unwrap().outcome, Outcome::Miss);
        let s = scan(b"$5\r\nhello\r\n+OK\r\n").unwrap().unwrap();
        assert_eq!(s.consumed, 11);
        assert_eq!(s.value, Some(4..9));
        assert_eq!(s.outcome, Outcome::Hit { siblings: 1 });
    }

    #[test]
    fn partial_replies_wait_for_more_bytes() {
        let full = b"$5\r\nhe\r\no\r\n";
        // A value may itself contain CRLF; only the length decides where it ends.
        let s = scan(full).unwrap().unwrap();
        assert_eq!(s.value, Some(4..9));
        for cut in 0..full.len() {
            assert_eq!(scan(&full[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(scan(b"+PON"), Ok(None));
        assert_eq!(scan(b"+PONG\r"), Ok(None));
    }

    #[test]
    fn malformed_and_oversized_replies_are_errors() {
        assert!(scan(b"$5\r\nhelloXX").is_err());
        assert!(scan(b"$abc\r\n").is_err());
        assert!(scan(b"*1\r\n$1\r\na\r\n").is_err());
        assert!(scan(b"$999999999999\r\n").is_err());
        assert!(scan(&[b'+'; 2000]).is_err());
    }
}
