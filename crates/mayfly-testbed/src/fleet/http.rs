//! Just enough HTTP/1.1 for the fleet's loopback metadata endpoint: one request per
//! connection (the response says `Connection: close`), bounded head and body, no chunked
//! bodies. curl, the AWS SDKs and bash's `/dev/tcp` all speak this subset.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest request head (request line and headers) accepted.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest request body accepted (and discarded: no route reads one).
const MAX_BODY_BYTES: usize = 64 * 1024;
/// A client that sends nothing for this long is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path without its query string.
    pub path: String,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The first header of this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One response; `Content-Length` and `Connection: close` are added when written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: body.into(),
        }
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    fn reason(&self) -> &'static str {
        match self.status {
            200 => "OK",
            202 => "Accepted",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            413 => "Payload Too Large",
            _ => "Error",
        }
    }

    /// The response as bytes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, self.reason());
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.body.len()
        ));
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(self.body.as_bytes());
        bytes
    }
}

/// Why a request could not be read; each maps to the response sent before closing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("request too large")]
    TooLarge,
    /// The connection closed or timed out before a whole request arrived: nothing to answer.
    #[error("connection closed: {0}")]
    Closed(String),
}

impl HttpError {
    /// The response to send for this error, if the client is still there to read one.
    pub fn response(&self) -> Option<Response> {
        match self {
            HttpError::Malformed(why) => Some(Response::new(400, format!("{why}\n"))),
            HttpError::TooLarge => Some(Response::new(413, "request too large\n")),
            HttpError::Closed(_) => None,
        }
    }
}

/// Parses a request head (everything before the blank line).
pub fn parse_head(head: &str) -> Result<Request, HttpError> {
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::Malformed(format!(
            "bad request line `{request_line}`"
        )));
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Err(HttpError::Malformed(format!(
            "bad request line `{request_line}`"
        )));
    }
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| HttpError::Malformed(format!("bad header line `{line}`")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    Ok(Request {
        method: method.to_owned(),
        path: path.to_owned(),
        headers,
    })
}

/// Reads one request (head and any body, which is discarded) from `stream`.
pub async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Request, HttpError> {
    tokio::time::timeout(READ_TIMEOUT, read_request_inner(stream))
        .await
        .unwrap_or_else(|_| Err(HttpError::Closed("read timed out".into())))
}

async fn read_request_inner<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Request, HttpError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if at > MAX_HEAD_BYTES {
                return Err(HttpError::TooLarge);
            }
            break at;
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(HttpError::TooLarge);
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| HttpError::Closed(e.to_string()))?;
        if n == 0 {
            return Err(HttpError::Closed("end of stream before the request".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| HttpError::Malformed("request head is not UTF-8".into()))?;
    let request = parse_head(head)?;
    if request.header("transfer-encoding").is_some() {
        return Err(HttpError::Malformed(
            "chunked bodies are not supported".into(),
        ));
    }
    let length = match request.header("content-length") {
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| HttpError::Malformed(format!("bad Content-Length `{v}`")))?,
        None => 0,
    };
    if length > MAX_BODY_BYTES {
        return Err(HttpError::TooLarge);
    }
    let mut remaining = length.saturating_sub(buf.len() - head_end - 4);
    while remaining > 0 {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| HttpError::Closed(e.to_string()))?;
        if n == 0 {
            return Err(HttpError::Closed("end of stream inside the body".into()));
        }
        remaining = remaining.saturating_sub(n);
    }
    Ok(request)
}

/// Writes `response` and flushes; errors mean the client went away, which is its business.
pub async fn write_response<S: AsyncWrite + Unpin>(
    stream: &mut S,
    response: &Response,
) -> std::io::Result<()> {
    stream.write_all(&response.to_bytes()).await?;
    stream.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_a_curl_style_request_and_skips_its_body() {
        let wire = b"PUT /latest/api/token?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\
            X-aws-ec2-metadata-token-ttl-seconds: 300\r\nContent-Length: 5\r\n\r\nhello";
        let mut stream: &[u8] = wire;
        let req = read_request(&mut stream).await.unwrap();
        assert_eq!(req.method, "PUT");
        assert_eq!(req.path, "/latest/api/token");
        assert_eq!(
            req.header("X-AWS-EC2-Metadata-Token-TTL-Seconds"),
            Some("300")
        );
        assert!(stream.is_empty(), "the body was consumed");
    }

    #[tokio::test]
    async fn refuses_what_it_cannot_parse() {
        let mut stream: &[u8] = b"GET\r\n\r\n";
        let err = read_request(&mut stream).await.unwrap_err();
        assert_eq!(err.response().unwrap().status, 400);
        let mut stream: &[u8] = b"GET / HTTP/1.1\r\nno colon here\r\n\r\n";
        assert!(matches!(
            read_request(&mut stream).await,
            Err(HttpError::Malformed(_))
        ));
        let mut stream: &[u8] = b"GET / HTTP/1.1\r\nHost: x";
        let err = read_request(&mut stream).await.unwrap_err();
        assert!(err.response().is_none(), "{err}");
        let big = format!(
            "GET / HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        let mut stream: &[u8] = big.as_bytes();
        assert_eq!(read_request(&mut stream).await, Err(HttpError::TooLarge));
    }

    #[test]
    fn responses_carry_length_and_close() {
        let bytes = Response::new(401, "no token\n").to_bytes();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{text}");
        assert!(text.contains("Content-Length: 9\r\nConnection: close\r\n\r\nno token\n"));
    }
}
