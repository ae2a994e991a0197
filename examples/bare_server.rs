//! The ceiling for `bench/ingest.sh`: a bare hyper server on the same runtime setup as
//! `lowkey serve` (multi-thread tokio, HTTP/1 keep-alive, TCP_NODELAY) that reads each
//! POST body and answers `202 {"ok":true}` without storing anything.
//!
//! ```text
//! cargo run --release --example bare_server -- 127.0.0.1:0
//! ```
//!
//! Prints the bound address on stdout (`listening on http://ADDR`), then serves until
//! killed. `GET` answers `200 {"ok":true}` so a script can poll it for readiness.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;

const OK: &[u8] = b"{\"ok\":true}\n";

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let status = match *req.method() {
        Method::POST => match req.into_body().collect().await {
            Ok(body) => {
                // Touch the bytes so the read cannot be optimised away.
                std::hint::black_box(body.to_bytes());
                StatusCode::ACCEPTED
            }
            Err(_) => StatusCode::BAD_REQUEST,
        },
        Method::GET | Method::HEAD => StatusCode::OK,
        _ => StatusCode::METHOD_NOT_ALLOWED,
    };
    let mut res = Response::new(Full::new(Bytes::from_static(OK)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(res)
}

fn main() -> std::process::ExitCode {
    let addr: SocketAddr = match std::env::args().nth(1).map(|a| a.parse()) {
        Some(Ok(addr)) => addr,
        Some(Err(e)) => {
            eprintln!("bare_server: bad listen address: {e}");
            return std::process::ExitCode::from(2);
        }
        None => {
            eprintln!("usage: bare_server ADDR   (e.g. 127.0.0.1:0)");
            return std::process::ExitCode::from(2);
        }
    };
    // The same runtime `lowkey serve` builds (src/cli.rs).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("bare_server: cannot listen on {addr}: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        let bound = listener.local_addr().expect("bound address");
        println!("listening on http://{bound}");
        let _ = std::io::stdout().flush();
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    eprintln!("bare_server: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30))
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service_fn(handle))
                    .await;
            });
        }
    })
}
