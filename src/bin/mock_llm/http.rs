//! Minimal HTTP/1.1 server side: request parsing (content-length and chunked bodies,
//! keep-alive) and response writing (fixed-length and chunked).

use std::io::{self, BufRead, Read, Write};

/// Limit on the request line plus headers.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Limit on a request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Limit on the number of request headers.
const MAX_HEADERS: usize = 256;

/// A parsed request.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// Path including the query string.
    pub target: String,
    /// Headers in arrival order, names lowercased, values trimmed.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The connection may be reused after this request.
    pub keep_alive: bool,
}

impl Request {
    /// First value of a header (`name` must be lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The path without the query string.
    pub fn path(&self) -> &str {
        match self.target.split_once('?') {
            Some((p, _)) => p,
            None => &self.target,
        }
    }

    /// The query string (without `?`), empty if none.
    pub fn query(&self) -> &str {
        self.target.split_once('?').map(|(_, q)| q).unwrap_or("")
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Strips a trailing `\n` or `\r\n`.
fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Reads one line (through `\n`) into `buf`, charging it to `budget`.
/// Returns the number of bytes read (0 at EOF).
fn read_line<R: BufRead>(r: &mut R, buf: &mut Vec<u8>, budget: &mut usize) -> io::Result<usize> {
    buf.clear();
    let n = Read::take(&mut *r, *budget as u64 + 1).read_until(b'\n', buf)?;
    if n > *budget {
        return Err(invalid("line too long"));
    }
    *budget -= n;
    Ok(n)
}

/// Reads a request line and headers. `Ok(None)` means the peer closed the connection
/// cleanly between requests. The body is not read (see [`read_body`]).
pub fn read_head<R: BufRead>(r: &mut R, line: &mut Vec<u8>) -> io::Result<Option<Request>> {
    let mut budget = MAX_HEAD_BYTES;
    loop {
        if read_line(r, line, &mut budget)? == 0 {
            return Ok(None);
        }
        // Tolerate stray empty lines between requests (RFC 9112 §2.2).
        if !trim_eol(line).is_empty() {
            break;
        }
    }
    let (method, target, version) = {
        let text = String::from_utf8_lossy(trim_eol(line));
        let mut parts = text.split_ascii_whitespace();
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(m), Some(t), Some(v), None) if v.starts_with("HTTP/1.") => {
                (m.to_string(), t.to_string(), v.to_string())
            }
            _ => return Err(invalid("malformed request line")),
        }
    };
    let mut headers = Vec::with_capacity(16);
    loop {
        if read_line(r, line, &mut budget)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "eof inside headers",
            ));
        }
        let l = trim_eol(line);
        if l.is_empty() {
            break;
        }
        let Some(colon) = l.iter().position(|&b| b == b':') else {
            return Err(invalid("malformed header line"));
        };
        if headers.len() >= MAX_HEADERS {
            return Err(invalid("too many headers"));
        }
        let name = String::from_utf8_lossy(&l[..colon])
            .trim()
            .to_ascii_lowercase();
        let value = String::from_utf8_lossy(&l[colon + 1..]).trim().to_string();
        headers.push((name, value));
    }
    let mut req = Request {
        method,
        target,
        headers,
        body: Vec::new(),
        keep_alive: false,
    };
    let conn = req.header("connection").map(str::to_ascii_lowercase);
    req.keep_alive = match conn.as_deref() {
        Some(c) if c.contains("close") => false,
        Some(c) if c.contains("keep-alive") => true,
        _ => version == "HTTP/1.1",
    };
    Ok(Some(req))
}

/// Reads the body announced by the headers of `req` into `req.body`.
pub fn read_body<R: BufRead>(r: &mut R, req: &mut Request) -> io::Result<()> {
    let chunked = req
        .headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        req.body = read_chunked(r, MAX_BODY_BYTES)?;
    } else if let Some(cl) = req.header("content-length") {
        let len: usize = cl.parse().map_err(|_| invalid("invalid content-length"))?;
        if len > MAX_BODY_BYTES {
            return Err(invalid("body too large"));
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body)?;
        req.body = body;
    }
    Ok(())
}

/// Decodes a `transfer-encoding: chunked` body (chunk extensions and trailers are
/// accepted and ignored).
pub fn read_chunked<R: BufRead>(r: &mut R, max: usize) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = Vec::with_capacity(32);
    loop {
        let mut budget = 4096;
        if read_line(r, &mut line, &mut budget)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "eof in chunk size",
            ));
        }
        let l = trim_eol(&line);
        let size_part = l.split(|&b| b == b';').next().unwrap_or(&[]);
        let size_str = std::str::from_utf8(size_part)
            .map_err(|_| invalid("invalid chunk size"))?
            .trim();
        let size =
            usize::from_str_radix(size_str, 16).map_err(|_| invalid("invalid chunk size"))?;
        if size == 0 {
            // Trailer section, ended by an empty line.
            let mut budget = MAX_HEAD_BYTES;
            loop {
                if read_line(r, &mut line, &mut budget)? == 0 || trim_eol(&line).is_empty() {
                    return Ok(body);
                }
            }
        }
        if body.len().saturating_add(size) > max {
            return Err(invalid("body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        let mut budget = 4096;
        if read_line(r, &mut line, &mut budget)? == 0 || !trim_eol(&line).is_empty() {
            return Err(invalid("missing CRLF after chunk data"));
        }
    }
}

/// Reason phrase for a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        424 => "Failed Dependency",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        529 => "Site is overloaded",
        _ => "Unknown",
    }
}

/// Extra response headers.
pub type Headers = Vec<(&'static str, String)>;

fn write_head(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    extra: &[(&'static str, String)],
    keep_alive: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: ");
    out.extend_from_slice(content_type.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (n, v) in extra {
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(if keep_alive {
        b"connection: keep-alive\r\n".as_slice()
    } else {
        b"connection: close\r\n".as_slice()
    });
}

/// Serializes a complete fixed-length response.
pub fn response_bytes(
    status: u16,
    content_type: &str,
    extra: &[(&'static str, String)],
    body: &[u8],
    keep_alive: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + body.len());
    write_head(&mut out, status, content_type, extra, keep_alive);
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
    out
}

/// Writes a complete fixed-length response in one write.
pub fn write_response<W: Write>(
    w: &mut W,
    status: u16,
    content_type: &str,
    extra: &[(&'static str, String)],
    body: &[u8],
    keep_alive: bool,
) -> io::Result<()> {
    w.write_all(&response_bytes(
        status,
        content_type,
        extra,
        body,
        keep_alive,
    ))?;
    w.flush()
}

/// Writes the head of a `transfer-encoding: chunked` response.
pub fn write_stream_head<W: Write>(
    w: &mut W,
    status: u16,
    content_type: &str,
    extra: &[(&'static str, String)],
    keep_alive: bool,
) -> io::Result<()> {
    let mut out = Vec::with_capacity(256);
    write_head(&mut out, status, content_type, extra, keep_alive);
    out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
    w.write_all(&out)?;
    w.flush()
}

/// Encodes `data` as one chunk (empty data encodes nothing: a zero chunk ends the body).
pub fn chunk_bytes(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 12);
    if data.is_empty() {
        return out;
    }
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// Writes and flushes one chunk.
pub fn write_chunk<W: Write>(w: &mut W, data: &[u8]) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    w.write_all(&chunk_bytes(data))?;
    w.flush()
}

/// Writes the terminating zero-length chunk.
pub fn write_last_chunk<W: Write>(w: &mut W) -> io::Result<()> {
    w.write_all(b"0\r\n\r\n")?;
    w.flush()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::io::{BufReader, Cursor};

    fn parse(raw: &[u8]) -> io::Result<Option<Request>> {
        let mut r = BufReader::new(Cursor::new(raw.to_vec()));
        let mut line = Vec::new();
        match read_head(&mut r, &mut line)? {
            Some(mut req) => {
                read_body(&mut r, &mut req)?;
                Ok(Some(req))
            }
            None => Ok(None),
        }
    }

    #[test]
    fn chunked_body_basic() {
        let raw = b"5\r\nHello\r\n7\r\n, world\r\n0\r\n\r\nNEXT";
        let mut r = BufReader::new(Cursor::new(raw.to_vec()));
        let body = read_chunked(&mut r, 1024).unwrap();
        assert_eq!(body, b"Hello, world");
        let mut rest = String::new();
        r.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "NEXT", "reader stops right after the body");
    }

    #[test]
    fn chunked_body_extensions_trailers_uppercase_hex_and_bare_lf() {
        let raw = b"A;name=value\r\n0123456789\r\n1\n!\n0\r\nx-trailer: 1\r\n\r\n";
        let mut r = BufReader::new(Cursor::new(raw.to_vec()));
        assert_eq!(read_chunked(&mut r, 1024).unwrap(), b"0123456789!");
    }

    #[test]
    fn chunked_body_errors() {
        for raw in [
            &b"zz\r\nabc\r\n0\r\n\r\n"[..],
            &b"3\r\nabcXX\r\n0\r\n\r\n"[..],
            &b"5\r\nabc"[..],
            &b"3\r\nabc\r\n"[..],
        ] {
            let mut r = BufReader::new(Cursor::new(raw.to_vec()));
            assert!(read_chunked(&mut r, 1024).is_err(), "{raw:?}");
        }
        let mut r = BufReader::new(Cursor::new(b"10\r\n0123456789abcdef\r\n0\r\n\r\n".to_vec()));
        assert!(read_chunked(&mut r, 8).is_err(), "limit enforced");
    }

    #[test]
    fn request_with_chunked_body() {
        let req = parse(
            b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nX-Mock-Text: hi there \r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(req.method, "POST");
        assert_eq!(req.path(), "/v1/chat/completions");
        assert_eq!(req.query(), "x=1");
        assert_eq!(req.header("x-mock-text"), Some("hi there"));
        assert_eq!(req.body, b"{}");
        assert!(req.keep_alive);
    }

    #[test]
    fn request_with_content_length_and_close() {
        let req =
            parse(b"POST /x HTTP/1.1\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabcdef")
                .unwrap()
                .unwrap();
        assert_eq!(req.body, b"abc");
        assert!(!req.keep_alive);
        let req = parse(b"GET /x HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!req.keep_alive);
        assert!(parse(b"").unwrap().is_none());
        assert!(parse(b"GARBAGE\r\n\r\n").is_err());
    }

    #[test]
    fn response_and_chunk_encoding() {
        let r = response_bytes(200, "text/plain", &[("x-a", "1".into())], b"ok", true);
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-a: 1\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok"
        );
        assert_eq!(
            chunk_bytes(b"0123456789abcdefX"),
            b"11\r\n0123456789abcdefX\r\n"
        );
        assert!(chunk_bytes(b"").is_empty());
    }
}
