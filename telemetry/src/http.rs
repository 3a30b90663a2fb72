//! The HTTP edge every viewcount listener runs behind: HTTP/1.1 (hyper) with
//! a deadline for each part a client controls, and caps on connections, so
//! that slow, silent and many clients cannot exhaust the server.
//!
//! - the request head must arrive within [`Limits::header_timeout`]; the
//!   same deadline closes a keep-alive connection idle after an answer, and
//!   a connection that never sends a byte;
//! - a request body must arrive whole within [`Limits::body_timeout`]
//!   (reading it fails with [`BodyTimeout`], answered 408);
//! - at most [`Limits::max_connections`] open connections, and at most
//!   [`Limits::max_connections_per_ip`] from one address: one over is
//!   answered `503` with `Retry-After` and closed at once;
//! - shutdown drains for at most [`Limits::drain_timeout`] (streams are told
//!   to close by their own services; whatever is left then is closed), and
//!   `hurry` closes everything at once.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::Ops;

/// Deadlines and caps of a listener; see the module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time to send a request's head (also: the most a connection may sit
    /// idle before its first or next request).
    pub header_timeout: Duration,
    /// Time to send a request's whole body.
    pub body_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
    /// Open connections from one IP address at most.
    pub max_connections_per_ip: usize,
    /// How long a shutdown waits for in-flight requests before closing
    /// what is left.
    pub drain_timeout: Duration,
}

impl Limits {
    /// Default [`Self::header_timeout`].
    pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default [`Self::body_timeout`].
    pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default [`Self::max_connections`].
    pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
    /// Default [`Self::max_connections_per_ip`].
    pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1_024;
    /// Default [`Self::drain_timeout`].
    pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Self::DEFAULT_HEADER_TIMEOUT,
            body_timeout: Self::DEFAULT_BODY_TIMEOUT,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: Self::DEFAULT_MAX_CONNECTIONS_PER_IP,
            drain_timeout: Self::DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

/// Reading a request body took longer than [`Limits::body_timeout`].
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}; send it faster or in smaller requests")]
pub struct BodyTimeout(pub Duration);

impl BodyTimeout {
    /// Whether `e` (or what caused it) is a body timeout.
    pub fn caused(e: &(dyn std::error::Error + 'static)) -> bool {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(e) = cur {
            if e.is::<BodyTimeout>() {
                return true;
            }
            cur = e.source();
        }
        false
    }
}

/// A request body that fails with [`BodyTimeout`] once its deadline passes.
struct DeadlineBody<B> {
    inner: B,
    sleep: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
}

impl<B> HttpBody for DeadlineBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(r) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(r.map(|f| f.map_err(Into::into)));
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(self.limit))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Open connections, in all and per address.
#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// One admitted connection; counted until dropped.
struct Slot {
    counts: Arc<Mutex<Counts>>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total -= 1;
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

fn admit(counts: &Arc<Mutex<Counts>>, ip: IpAddr, limits: &Limits) -> Result<Slot, &'static str> {
    let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
    if c.total >= limits.max_connections {
        return Err("the server has as many connections open as it allows");
    }
    let from_ip = c.per_ip.entry(ip).or_default();
    if *from_ip >= limits.max_connections_per_ip {
        return Err("this address has as many connections open as the server allows one address");
    }
    *from_ip += 1;
    c.total += 1;
    Ok(Slot {
        counts: counts.clone(),
        ip,
    })
}

/// Answers a connection over the caps with 503 and closes it, without
/// reading its request (best effort, bounded).
async fn refuse(mut stream: TcpStream, why: &'static str) {
    let body = format!(
        r#"{{"error":{{"code":"too_many_connections","message":"{why}; retry after the Retry-After delay"}}}}"#
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Serves `app` on `listener` within `limits` until `shutdown`, then drains:
/// `/readyz` turns 503, nothing new is accepted, idle connections close,
/// in-flight requests get up to [`Limits::drain_timeout`]; `hurry` (e.g. a
/// second Ctrl-C) closes whatever is left at once.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    ops: Ops,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    hurry: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let counts = Arc::new(Mutex::new(Counts::default()));
    let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "http: accept failed; pausing 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let slot = match admit(&counts, peer.ip(), &limits) {
            Ok(s) => s,
            Err(why) => {
                tracing::debug!(%peer, why, "http: connection refused");
                conns.spawn(refuse(stream, why));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let mut drain = drain_rx.clone();
        conns.spawn(async move {
            let _slot = slot;
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let req = req.map(|body| {
                        Body::new(DeadlineBody {
                            inner: body,
                            sleep: Box::pin(tokio::time::sleep(limits.body_timeout)),
                            limit: limits.body_timeout,
                        })
                    });
                    app.clone().oneshot(req)
                });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "http: connection ended");
                    }
                    return;
                }
                _ = drain.wait_for(|d| *d) => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
    }
    drop(listener);
    ops.start_draining();
    let _ = drain_tx.send(true);
    tracing::info!(
        connections = conns.len(),
        deadline = ?limits.drain_timeout,
        "shutdown requested, draining in-flight requests"
    );
    let deadline = tokio::time::sleep(limits.drain_timeout);
    tokio::pin!(deadline, hurry);
    loop {
        tokio::select! {
            r = conns.join_next() => if r.is_none() { break },
            () = &mut deadline => {
                tracing::warn!(left = conns.len(), "drain deadline passed; closing the connections left");
                break;
            }
            () = &mut hurry => {
                tracing::warn!(left = conns.len(), "asked to stop now; closing the connections left");
                break;
            }
        }
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::routing::{get, post};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpSocket;

    use super::*;

    /// A listener serving a small app within `limits`; its address, the
    /// shutdown and hurry senders and the server task.
    struct Server {
        addr: SocketAddr,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        hurry: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    async fn start(limits: Limits) -> Server {
        let app = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/echo",
                post(
                    |body: Result<Bytes, axum::extract::rejection::BytesRejection>| async move {
                        match body {
                            Ok(b) => (StatusCode::OK, b).into_response(),
                            Err(r) if BodyTimeout::caused(&r) => {
                                StatusCode::REQUEST_TIMEOUT.into_response()
                            }
                            Err(r) => (StatusCode::BAD_REQUEST, r.body_text()).into_response(),
                        }
                    },
                ),
            )
            .route(
                "/forever",
                get(|| async {
                    Body::from_stream(futures::stream::pending::<Result<Bytes, std::io::Error>>())
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (hurry, hurry_rx) = tokio::sync::oneshot::channel::<()>();
        let ops = crate::OpsBuilder::new().build();
        let task = tokio::spawn(serve(
            listener,
            app,
            ops,
            limits,
            async move {
                let _ = stop_rx.await;
            },
            async move {
                let _ = hurry_rx.await;
            },
        ));
        Server {
            addr,
            stop: Some(stop),
            hurry: Some(hurry),
            task,
        }
    }

    fn quick() -> Limits {
        Limits {
            header_timeout: Duration::from_millis(300),
            body_timeout: Duration::from_millis(300),
            ..Limits::default()
        }
    }

    async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        socket.connect(addr).await.unwrap()
    }

    /// Everything the server sends until it closes (the test gives up
    /// after 20 s: a server that never closes fails it).
    async fn read_to_close(s: &mut TcpStream) -> String {
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
            .await
            .expect("the server closes the connection")
            .ok();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn silent_slow_header_and_idle_connections_are_closed() {
        let server = start(quick()).await;
        // Never a byte.
        let mut silent = TcpStream::connect(server.addr).await.unwrap();
        // Half a head.
        let mut slow = TcpStream::connect(server.addr).await.unwrap();
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        // One answered request, then idle on keep-alive.
        let mut idle = TcpStream::connect(server.addr).await.unwrap();
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_to_close(&mut silent).await, "");
        let slow_answer = read_to_close(&mut slow).await;
        assert!(
            slow_answer.is_empty() || slow_answer.starts_with("HTTP/1.1 408"),
            "{slow_answer}"
        );
        let answered = read_to_close(&mut idle).await;
        assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    }

    #[tokio::test]
    async fn a_body_sent_too_slowly_is_answered_408() {
        let server = start(quick()).await;
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
            .await
            .unwrap();
        let answer = read_to_close(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        // A whole body in time is read.
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello")
            .await
            .unwrap();
        let answer = read_to_close(&mut s).await;
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("hello"),
            "{answer}"
        );
    }

    #[tokio::test]
    async fn connections_over_the_caps_are_refused_503_and_others_still_served() {
        let server = start(Limits {
            max_connections: 4,
            max_connections_per_ip: 2,
            ..Limits::default()
        })
        .await;
        let _a = connect_from("127.0.0.1", server.addr).await;
        let _b = connect_from("127.0.0.1", server.addr).await;
        let mut third = connect_from("127.0.0.1", server.addr).await;
        let refused = read_to_close(&mut third).await;
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
        assert!(refused.contains("retry-after: 1"), "{refused}");
        assert!(refused.contains("too_many_connections"), "{refused}");
        // Another address is still answered.
        let mut other = connect_from("127.0.0.2", server.addr).await;
        other
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = read_to_close(&mut other).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // The global cap: two more from elsewhere fill it.
        let _c = connect_from("127.0.0.3", server.addr).await;
        let _d = connect_from("127.0.0.4", server.addr).await;
        let mut fifth = connect_from("127.0.0.5", server.addr).await;
        let refused = read_to_close(&mut fifth).await;
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
        // A closed connection frees its place.
        drop(_a);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut again = connect_from("127.0.0.1", server.addr).await;
            again
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            if read_to_close(&mut again).await.starts_with("HTTP/1.1 200") {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the place was never freed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn open_forever(addr: SocketAddr) -> TcpStream {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /forever HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        s
    }

    #[tokio::test]
    async fn shutdown_drains_within_its_deadline_and_hurry_closes_at_once() {
        // A response that never ends (a stream nobody told to close) is cut
        // at the drain deadline.
        let mut server = start(Limits {
            drain_timeout: Duration::from_millis(300),
            ..Limits::default()
        })
        .await;
        let mut stream = open_forever(server.addr).await;
        let _ = server.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(20), &mut server.task)
            .await
            .expect("serve returns after the drain deadline")
            .unwrap()
            .unwrap();
        read_to_close(&mut stream).await;

        // With a drain deadline of an hour, hurry ends it.
        let mut server = start(Limits {
            drain_timeout: Duration::from_secs(3600),
            ..Limits::default()
        })
        .await;
        let mut stream = open_forever(server.addr).await;
        let _ = server.stop.take().unwrap().send(());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!server.task.is_finished(), "still draining");
        let _ = server.hurry.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(20), &mut server.task)
            .await
            .expect("serve returns once hurried")
            .unwrap()
            .unwrap();
        read_to_close(&mut stream).await;
    }
}
