//! The proxy's server loop: accepting connections and serving each one's requests in turn
//! (HTTP/1.1 keep-alive), until a reply closes it or a fault drops it.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::handler::{Outcome, Shared};
use super::wire::{self, Reply};

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = Vec::new();
    loop {
        let req = match wire::read_request(&mut rd, &mut wr, &mut buf).await {
            Ok(Some(req)) => req,
            Ok(None) => return,
            Err(e) => {
                debug!(error = %e, "Unreadable request; closing the connection.");
                let reply = Reply::new(400, "text/plain", format!("faultproxy: {e}"));
                let _ = wire::write_reply(&mut wr, &reply, true).await;
                return;
            }
        };
        let close = !req.keep_alive();
        match shared.handle(req).await {
            Outcome::Reply(reply) => {
                if wire::write_reply(&mut wr, &reply, close).await.is_err() || close {
                    return;
                }
            }
            // Dropping both halves closes the socket.
            Outcome::Drop => return,
        }
    }
}

pub(super) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Owning the connections' tasks here means aborting this task ends them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
                Err(e) => {
                    // Out of descriptors, say: wait a little rather than spin.
                    warn!(error = %e, "Accept failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}
