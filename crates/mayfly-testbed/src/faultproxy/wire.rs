//! The proxy's server side: a small HTTP/1.1 reader and writer on a raw TCP stream. Owning
//! the socket is what lets a fault hold a request or drop the connection mid-exchange, the
//! way a lost response or a stalled endpoint looks to a client. Requests are read whole
//! (`Content-Length` or chunked bodies, `Expect: 100-continue` answered); every reply is
//! written with a `Content-Length`.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest request head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024 * 1024;
const MAX_HEADERS: usize = 128;

/// One request, read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Names as sent; values lossily decoded as UTF-8.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Request {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the connection stays open after this exchange.
    pub fn keep_alive(&self) -> bool {
        let connection = self.header("connection").map(str::to_ascii_lowercase);
        match self.minor_version {
            0 => connection.is_some_and(|c| c.contains("keep-alive")),
            _ => !connection.is_some_and(|c| c.contains("close")),
        }
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }
}

/// One reply to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: vec![("Content-Type".into(), content_type.as_bytes().to_vec())],
            body: body.into(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_owned(), value.as_bytes().to_vec()));
        self
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Reads more bytes into `buf`; false at end of stream.
async fn fill<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut chunk = [0u8; 16 * 1024];
    let n = rd.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n > 0)
}

/// Makes sure `buf` holds at least `len` bytes.
async fn fill_to<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut Vec<u8>,
    len: usize,
) -> io::Result<()> {
    while buf.len() < len {
        if !fill(rd, buf).await? {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

/// Position just past the next CRLF at or after `from`, reading more as needed.
async fn line_end<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut Vec<u8>,
    from: usize,
) -> io::Result<usize> {
    loop {
        if let Some(i) = buf[from..].windows(2).position(|w| w == b"\r\n") {
            return Ok(from + i + 2);
        }
        if buf.len() - from > MAX_HEAD {
            return Err(invalid("line too long"));
        }
        if !fill(rd, buf).await? {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Reads the next request of a connection. `buf` carries bytes read past the previous
/// request. `Ok(None)` when the client closed the connection between requests.
pub async fn read_request<R, W>(
    rd: &mut R,
    wr: &mut W,
    buf: &mut Vec<u8>,
) -> io::Result<Option<Request>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // The head.
    let (head_len, method, target, minor_version, headers) = loop {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut slots);
        match parsed.parse(buf).map_err(|e| invalid(e.to_string()))? {
            httparse::Status::Complete(n) => {
                let headers: Vec<(String, String)> = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_owned(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                break (
                    n,
                    parsed.method.unwrap_or_default().to_owned(),
                    parsed.path.unwrap_or_default().to_owned(),
                    parsed.version.unwrap_or(1),
                    headers,
                );
            }
            httparse::Status::Partial => {
                if buf.len() > MAX_HEAD {
                    return Err(invalid("request head too large"));
                }
                if !fill(rd, buf).await? {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
        }
    };
    let mut req = Request {
        method,
        target,
        minor_version,
        headers,
        body: Vec::new(),
    };

    // The body.
    let chunked = req
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    let length = match req.header("content-length") {
        Some(v) if !chunked => v
            .trim()
            .parse::<usize>()
            .map_err(|_| invalid("bad content-length"))?,
        _ => 0,
    };
    if length > MAX_BODY {
        return Err(invalid("request body too large"));
    }
    let has_body = chunked || length > 0;
    if has_body
        && buf.len() == head_len
        && req
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        wr.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        wr.flush().await?;
    }
    let consumed = if chunked {
        let mut pos = head_len;
        loop {
            let end = line_end(rd, buf, pos).await?;
            let line =
                std::str::from_utf8(&buf[pos..end - 2]).map_err(|_| invalid("bad chunk size"))?;
            let size_hex = line.split(';').next().unwrap_or_default().trim();
            let size =
                usize::from_str_radix(size_hex, 16).map_err(|_| invalid("bad chunk size"))?;
            pos = end;
            if size == 0 {
                // Trailers, up to an empty line.
                loop {
                    let end = line_end(rd, buf, pos).await?;
                    let empty = end - pos == 2;
                    pos = end;
                    if empty {
                        break;
                    }
                }
                break pos;
            }
            if req.body.len() + size > MAX_BODY {
                return Err(invalid("request body too large"));
            }
            fill_to(rd, buf, pos + size + 2).await?;
            req.body.extend_from_slice(&buf[pos..pos + size]);
            pos += size + 2;
        }
    } else {
        fill_to(rd, buf, head_len + length).await?;
        req.body = buf[head_len..head_len + length].to_vec();
        head_len + length
    };
    buf.drain(..consumed);
    Ok(Some(req))
}

fn reason(status: u16) -> &'static str {
    hyper::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown")
}

/// Writes `reply` with a `Content-Length` (any given one is replaced), and
/// `Connection: close` when `close`.
pub async fn write_reply<W: AsyncWrite + Unpin>(
    wr: &mut W,
    reply: &Reply,
    close: bool,
) -> io::Result<()> {
    let mut out = Vec::with_capacity(reply.body.len() + 256);
    out.extend_from_slice(
        format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status)).as_bytes(),
    );
    for (name, value) in &reply.headers {
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("connection") {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n", reply.body.len()).as_bytes());
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&reply.body);
    wr.write_all(&out).await?;
    wr.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(input: &[u8]) -> (Vec<Request>, Vec<u8>) {
        let mut rd = input;
        let mut wr = Vec::new();
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while let Some(r) = read_request(&mut rd, &mut wr, &mut buf).await.unwrap() {
            out.push(r);
        }
        (out, wr)
    }

    #[tokio::test]
    async fn reads_pipelined_requests_with_lengths_and_chunks() {
        let input = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
GET /a?b=c HTTP/1.0\r\n\r\n\
POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n";
        let (reqs, wrote) = read_all(input).await;
        assert!(wrote.is_empty());
        assert_eq!(reqs.len(), 3);
        assert_eq!(reqs[0].body, b"hello");
        assert_eq!(reqs[0].header("HOST"), Some("x"));
        assert!(reqs[0].keep_alive());
        assert_eq!(reqs[1].path(), "/a");
        assert_eq!(reqs[1].target, "/a?b=c");
        assert!(!reqs[1].keep_alive());
        assert_eq!(reqs[2].body, b"abcde");
    }

    #[tokio::test]
    async fn answers_expect_continue_and_rejects_garbage() {
        let (reqs, wrote) = read_all(
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
        )
        .await;
        assert_eq!(reqs[0].body, b"hi");
        assert!(!reqs[0].keep_alive());
        // The body was already buffered, so no interim reply was needed.
        assert!(wrote.is_empty());

        let mut rd: &[u8] = b"\x00\x01 nonsense\r\n\r\n";
        let mut buf = Vec::new();
        assert!(read_request(&mut rd, &mut Vec::new(), &mut buf)
            .await
            .is_err());
        let mut rd: &[u8] = b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort";
        let mut buf = Vec::new();
        assert!(read_request(&mut rd, &mut Vec::new(), &mut buf)
            .await
            .is_err());
    }

    #[tokio::test]
    async fn writes_replies_with_a_length() {
        let mut out = Vec::new();
        let reply = Reply::new(503, "text/xml", "<x/>")
            .header("Content-Length", "999")
            .header("x-amzn-RequestId", "r1");
        write_reply(&mut out, &reply, true).await.unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/xml\r\n\
             x-amzn-RequestId: r1\r\nContent-Length: 4\r\nConnection: close\r\n\r\n<x/>"
        );
    }
}
