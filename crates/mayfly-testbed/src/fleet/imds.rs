//! One instance's metadata endpoint: the IMDSv2 subset mayfly's user-data uses, served on
//! its own loopback port, plus the fleet's control paths for that instance's shims.
//!
//! One port per instance, because that is what an instance sees on EC2: its own
//! `169.254.169.254`, answering for itself only, with no instance id in the request. The
//! script finds it through `MAYFLY_IMDS_ENDPOINT`.
//!
//! IMDSv2 as EC2 serves it: `PUT /latest/api/token` with
//! `X-aws-ec2-metadata-token-ttl-seconds` (1–21600) returns a session token; every `GET`
//! must carry it in `X-aws-ec2-metadata-token` (401 without a valid, unexpired one). Paths:
//! `meta-data/instance-id`, `meta-data/instance-type`, `meta-data/placement/availability-zone`,
//! `meta-data/placement/region`, `meta-data/ami-launch-index` (its place in its launch),
//! `meta-data/spot/instance-action` (404 until a spot notice is due), `user-data`, and, for an
//! instance the fleet gives its role's credentials, `meta-data/iam/security-credentials/` (the
//! role's name) and `meta-data/iam/security-credentials/ROLE` (the credentials, as EC2 serves
//! them), all under
//! `/latest/`. Tokens are unguessable enough for loopback, not
//! cryptographic.
//!
//! Fleet paths (not IMDS, no token): `POST /mayfly/shutdown` (the `shutdown` shim) and
//! `POST /mayfly/crash` (an injected crash); both answer 202 and the fleet acts on them.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::http::{self, Request, Response};

const TOKEN_TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";
/// EC2's longest token lifetime (six hours).
const MAX_TOKEN_TTL_SECS: u64 = 21_600;

/// What the endpoint tells an instance about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceMetadata {
    pub instance_id: String,
    pub instance_type: String,
    pub availability_zone: String,
    pub region: String,
    pub user_data: String,
    /// The instance profile role's credentials, when the fleet serves them.
    pub credentials: Option<super::cloud::RoleCredentials>,
    /// Its place among the instances of the RunInstances that launched it.
    pub ami_launch_index: u32,
}

/// What an instance's shims ask the fleet to do to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlKind {
    /// `shutdown` / `poweroff`: terminate the instance, then end its processes.
    Shutdown,
    /// An injected crash: end its processes; the instance stays running.
    Crash,
}

/// A control request from one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    pub instance_id: String,
    pub kind: ControlKind,
}

/// A spot interruption notice, served from `visible_at` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SpotNotice {
    visible_at: Instant,
    /// When the instance will be reclaimed (the notice's `time`).
    action_time: DateTime<Utc>,
}

/// The endpoint's state for one instance; [`Imds::respond`] is the pure part of serving.
#[derive(Debug)]
pub struct Imds {
    meta: InstanceMetadata,
    /// Token → expiry.
    tokens: Mutex<HashMap<String, Instant>>,
    spot: Mutex<Option<SpotNotice>>,
    issued: AtomicU64,
}

impl Imds {
    pub fn new(meta: InstanceMetadata) -> Self {
        Self {
            meta,
            tokens: Mutex::new(HashMap::new()),
            spot: Mutex::new(None),
            issued: AtomicU64::new(0),
        }
    }

    pub fn instance_id(&self) -> &str {
        &self.meta.instance_id
    }

    /// From `visible_at` on, `meta-data/spot/instance-action` announces termination at
    /// `action_time`.
    pub fn schedule_spot_notice(&self, visible_at: Instant, action_time: DateTime<Utc>) {
        *self.spot.lock().unwrap_or_else(PoisonError::into_inner) = Some(SpotNotice {
            visible_at,
            action_time,
        });
    }

    /// Answers one request at time `now`, and says what the fleet should do, if anything.
    pub fn respond(&self, req: &Request, now: Instant) -> (Response, Option<ControlKind>) {
        match (req.method.as_str(), req.path.as_str()) {
            ("PUT", "/latest/api/token") => (self.issue_token(req, now), None),
            ("POST", "/mayfly/shutdown") => (
                Response::new(202, "shutting down\n"),
                Some(ControlKind::Shutdown),
            ),
            ("POST", "/mayfly/crash") => {
                (Response::new(202, "crashing\n"), Some(ControlKind::Crash))
            }
            ("GET", path) => (self.get(req, path, now), None),
            _ => (Response::new(405, "method not allowed\n"), None),
        }
    }

    fn issue_token(&self, req: &Request, now: Instant) -> Response {
        // EC2 refuses token requests that went through a proxy.
        if req.header("x-forwarded-for").is_some() {
            return Response::new(403, "forbidden\n");
        }
        let ttl = req
            .header(TOKEN_TTL_HEADER)
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|ttl| (1..=MAX_TOKEN_TTL_SECS).contains(ttl));
        let Some(ttl) = ttl else {
            return Response::new(
                400,
                format!("{TOKEN_TTL_HEADER} must be 1 to {MAX_TOKEN_TTL_SECS}\n"),
            );
        };
        let token = self.new_token();
        let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        tokens.retain(|_, expiry| *expiry > now);
        tokens.insert(token.clone(), now + Duration::from_secs(ttl));
        Response::new(200, token).with_header(TOKEN_TTL_HEADER, ttl.to_string())
    }

    fn new_token(&self) -> String {
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        // Each RandomState is freshly keyed, so the two halves are independent.
        (0..2)
            .map(|half: u8| {
                let mut h = RandomState::new().build_hasher();
                h.write(self.meta.instance_id.as_bytes());
                h.write_u64(n);
                h.write_u128(nanos);
                h.write_u8(half);
                format!("{:016x}", h.finish())
            })
            .collect()
    }

    fn token_valid(&self, req: &Request, now: Instant) -> bool {
        let Some(token) = req.header(TOKEN_HEADER) else {
            return false;
        };
        let tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        tokens.get(token).is_some_and(|expiry| *expiry > now)
    }

    fn get(&self, req: &Request, path: &str, now: Instant) -> Response {
        if !self.token_valid(req, now) {
            return Response::new(401, "unauthorized\n");
        }
        let m = &self.meta;
        let value = match path {
            "/latest/meta-data/instance-id" => m.instance_id.clone(),
            "/latest/meta-data/instance-type" => m.instance_type.clone(),
            "/latest/meta-data/placement/availability-zone" => m.availability_zone.clone(),
            "/latest/meta-data/placement/region" => m.region.clone(),
            "/latest/meta-data/ami-launch-index" => m.ami_launch_index.to_string(),
            "/latest/user-data" => m.user_data.clone(),
            "/latest/meta-data/iam/security-credentials"
            | "/latest/meta-data/iam/security-credentials/" => match &m.credentials {
                Some(c) => c.role_name.clone(),
                None => return Response::new(404, "not found\n"),
            },
            p if p.starts_with("/latest/meta-data/iam/security-credentials/") => {
                match &m.credentials {
                    Some(c) if p.ends_with(&format!("/{}", c.role_name)) => serde_json::json!({
                        "Code": "Success",
                        "LastUpdated": Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
                        "Type": "AWS-HMAC",
                        "AccessKeyId": c.access_key_id,
                        "SecretAccessKey": c.secret_access_key,
                        "Token": c.session_token,
                        "Expiration": c.expiration.to_rfc3339_opts(SecondsFormat::Secs, true),
                    })
                    .to_string(),
                    _ => return Response::new(404, "not found\n"),
                }
            }
            "/latest/meta-data/spot/instance-action" => match self.spot_notice(now) {
                Some(notice) => notice,
                None => return Response::new(404, "not found\n"),
            },
            _ => return Response::new(404, "not found\n"),
        };
        Response::new(200, value)
    }

    fn spot_notice(&self, now: Instant) -> Option<String> {
        let spot = *self.spot.lock().unwrap_or_else(PoisonError::into_inner);
        let notice = spot.filter(|n| now >= n.visible_at)?;
        Some(
            serde_json::json!({
                "action": "terminate",
                "time": notice.action_time.to_rfc3339_opts(SecondsFormat::Secs, true),
            })
            .to_string(),
        )
    }
}

/// A running endpoint for one instance; stops accepting when dropped.
#[derive(Debug)]
pub struct ImdsServer {
    pub imds: Arc<Imds>,
    port: u16,
    task: JoinHandle<()>,
}

impl ImdsServer {
    /// Binds a fresh loopback port and serves `imds` on it; control requests go to `control`.
    pub async fn start(imds: Imds, control: UnboundedSender<Control>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let imds = Arc::new(imds);
        let task = tokio::spawn(serve(listener, imds.clone(), control));
        Ok(Self { imds, port, task })
    }

    /// The base URL scripts use (`MAYFLY_IMDS_ENDPOINT`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for ImdsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, imds: Arc<Imds>, control: UnboundedSender<Control>) {
    loop {
        let mut stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(instance_id = %imds.instance_id(), error = %e, "Metadata endpoint accept failed.");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (imds, control) = (imds.clone(), control.clone());
        tokio::spawn(async move {
            let response = match http::read_request(&mut stream).await {
                Ok(req) => {
                    let (response, action) = imds.respond(&req, Instant::now());
                    debug!(instance_id = %imds.instance_id(), method = %req.method, path = %req.path, status = response.status, "Metadata request.");
                    if let Some(kind) = action {
                        // The fleet only stops listening when it is exiting.
                        let _ = control.send(Control {
                            instance_id: imds.instance_id().to_owned(),
                            kind,
                        });
                    }
                    response
                }
                Err(e) => match e.response() {
                    Some(response) => response,
                    None => return,
                },
            };
            // A client that hung up does not want the answer.
            let _ = http::write_response(&mut stream, &response).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn imds() -> Imds {
        Imds::new(InstanceMetadata {
            instance_id: "i-0123456789abcdef0".into(),
            instance_type: "m7i.large".into(),
            availability_zone: "us-east-1a".into(),
            region: "us-east-1".into(),
            user_data: "#!/bin/bash\n".into(),
            credentials: None,
            ami_launch_index: 3,
        })
    }

    fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), (*v).to_owned()))
                .collect(),
        }
    }

    fn token(imds: &Imds, ttl: &str, now: Instant) -> String {
        let (resp, _) = imds.respond(
            &req("PUT", "/latest/api/token", &[(TOKEN_TTL_HEADER, ttl)]),
            now,
        );
        assert_eq!(resp.status, 200, "{}", resp.body);
        resp.body
    }

    #[test]
    fn the_role_credentials_are_served_as_ec2_serves_them() {
        let now = Instant::now();
        let get = |imds: &Imds, path: &str| {
            let t = token(imds, "300", now);
            imds.respond(&req("GET", path, &[(TOKEN_HEADER, &t)]), now)
                .0
        };
        let listing = "/latest/meta-data/iam/security-credentials/";
        assert_eq!(get(&imds(), listing).status, 404, "no role, no credentials");
        let with_role = Imds::new(InstanceMetadata {
            credentials: Some(super::super::cloud::RoleCredentials {
                role_name: "prod-payer-a-PayerRole-X".into(),
                access_key_id: "ASIAEXAMPLE".into(),
                secret_access_key: "secret".into(),
                session_token: "token".into(),
                expiration: chrono::DateTime::from_timestamp(1_900_000_000, 0).unwrap(),
            }),
            ..imds().meta
        });
        assert_eq!(get(&with_role, listing).body, "prod-payer-a-PayerRole-X");
        let creds = get(&with_role, &format!("{listing}prod-payer-a-PayerRole-X"));
        let json: serde_json::Value = serde_json::from_str(&creds.body).unwrap();
        assert_eq!(json["Code"], "Success");
        assert_eq!(json["AccessKeyId"], "ASIAEXAMPLE");
        assert_eq!(json["Token"], "token");
        assert_eq!(json["Expiration"], "2030-03-17T17:46:40Z");
        assert_eq!(get(&with_role, &format!("{listing}other-role")).status, 404);
    }

    #[test]
    fn metadata_needs_a_token() {
        let imds = imds();
        let now = Instant::now();
        let path = "/latest/meta-data/instance-id";
        assert_eq!(imds.respond(&req("GET", path, &[]), now).0.status, 401);
        let bad = req("GET", path, &[(TOKEN_HEADER, "not-a-token")]);
        assert_eq!(imds.respond(&bad, now).0.status, 401);
        let t = token(&imds, "300", now);
        assert_eq!(t.len(), 32);
        let (resp, action) = imds.respond(&req("GET", path, &[(TOKEN_HEADER, &t)]), now);
        assert_eq!(
            (resp.status, resp.body.as_str()),
            (200, "i-0123456789abcdef0")
        );
        assert_eq!(action, None);
        let az = req(
            "GET",
            "/latest/meta-data/placement/availability-zone",
            &[(TOKEN_HEADER, &t)],
        );
        assert_eq!(imds.respond(&az, now).0.body, "us-east-1a");
        let index = req(
            "GET",
            "/latest/meta-data/ami-launch-index",
            &[(TOKEN_HEADER, &t)],
        );
        assert_eq!(imds.respond(&index, now).0.body, "3");
    }

    #[test]
    fn tokens_expire_and_ttls_are_checked() {
        let imds = imds();
        let now = Instant::now();
        let t = token(&imds, "2", now);
        let get = req(
            "GET",
            "/latest/meta-data/instance-id",
            &[(TOKEN_HEADER, &t)],
        );
        assert_eq!(
            imds.respond(&get, now + Duration::from_secs(1)).0.status,
            200
        );
        assert_eq!(
            imds.respond(&get, now + Duration::from_secs(2)).0.status,
            401
        );
        for ttl in ["0", "21601", "soon"] {
            let put = req("PUT", "/latest/api/token", &[(TOKEN_TTL_HEADER, ttl)]);
            assert_eq!(imds.respond(&put, now).0.status, 400, "ttl {ttl}");
        }
        let no_ttl = req("PUT", "/latest/api/token", &[]);
        assert_eq!(imds.respond(&no_ttl, now).0.status, 400);
        let proxied = req(
            "PUT",
            "/latest/api/token",
            &[(TOKEN_TTL_HEADER, "60"), ("X-Forwarded-For", "10.0.0.1")],
        );
        assert_eq!(imds.respond(&proxied, now).0.status, 403);
        assert_ne!(token(&imds, "60", now), token(&imds, "60", now));
    }

    #[test]
    fn spot_notice_appears_when_due() {
        let imds = imds();
        let now = Instant::now();
        let t = token(&imds, "300", now);
        let get = req(
            "GET",
            "/latest/meta-data/spot/instance-action",
            &[(TOKEN_HEADER, &t)],
        );
        assert_eq!(imds.respond(&get, now).0.status, 404);
        let at = DateTime::parse_from_rfc3339("2026-11-22T12:02:00Z")
            .unwrap()
            .with_timezone(&Utc);
        imds.schedule_spot_notice(now + Duration::from_secs(1), at);
        assert_eq!(imds.respond(&get, now).0.status, 404);
        let (resp, _) = imds.respond(&get, now + Duration::from_secs(1));
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.body,
            r#"{"action":"terminate","time":"2026-11-22T12:02:00Z"}"#
        );
    }

    #[test]
    fn control_paths_and_unknown_requests() {
        let imds = imds();
        let now = Instant::now();
        let (resp, action) = imds.respond(&req("POST", "/mayfly/shutdown", &[]), now);
        assert_eq!((resp.status, action), (202, Some(ControlKind::Shutdown)));
        let (_, action) = imds.respond(&req("POST", "/mayfly/crash", &[]), now);
        assert_eq!(action, Some(ControlKind::Crash));
        assert_eq!(
            imds.respond(&req("DELETE", "/latest/api/token", &[]), now)
                .0
                .status,
            405
        );
        let t = token(&imds, "300", now);
        let unknown = req("GET", "/latest/meta-data/nope", &[(TOKEN_HEADER, &t)]);
        assert_eq!(imds.respond(&unknown, now).0.status, 404);
    }

    #[tokio::test]
    async fn serves_over_loopback() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let server = ImdsServer::start(imds(), tx).await.unwrap();
        let addr = server.endpoint().trim_start_matches("http://").to_owned();
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"POST /mayfly/crash HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 202 "), "{out}");
        let control = rx.recv().await.unwrap();
        assert_eq!(control.instance_id, "i-0123456789abcdef0");
        assert_eq!(control.kind, ControlKind::Crash);
    }
}
