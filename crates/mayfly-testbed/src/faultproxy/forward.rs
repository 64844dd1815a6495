//! Forwarding a request upstream and reading the whole response, on a pooled HTTP/1 client.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::handler::Shared;
use super::wire::{Reply, Request};

pub(super) type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// The client requests go upstream on.
pub(super) fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// Hop-by-hop headers and those the proxy rewrites: never forwarded as received.
fn skip_header(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "content-length",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

impl Shared {
    /// Sends `req` upstream and reads the whole response.
    pub(super) async fn forward(&self, req: Request) -> Result<Reply, String> {
        let had_body_framing =
            req.header("content-length").is_some() || req.header("transfer-encoding").is_some();
        let mut builder = hyper::Request::builder()
            .method(req.method.as_str())
            .uri(format!("{}{}", self.upstream, req.target));
        for (name, value) in &req.headers {
            if !skip_header(name) {
                builder = builder.header(name.as_str(), value.as_str());
            }
        }
        if had_body_framing || !req.body.is_empty() {
            builder = builder.header("content-length", req.body.len());
        }
        let request = builder
            .body(Full::new(Bytes::from(req.body)))
            .map_err(|e| e.to_string())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        let headers = parts
            .headers
            .iter()
            .filter(|(name, _)| !skip_header(name.as_str()))
            .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
            .collect();
        Ok(Reply {
            status: parts.status.as_u16(),
            headers,
            body: body.to_vec(),
        })
    }
}
