//! The read-only web side: dashboard, JSON API, Prometheus metrics and a
//! liveness check, served by tiny_http on threads of its own.
//!
//! | path | what |
//! |---|---|
//! | `GET /` | the dashboard (one embedded page, no external resources) |
//! | `GET /api/stats` | JSON, SocksBalance-compatible plus our fields (docs/api.md) |
//! | `GET /metrics` | Prometheus text format 0.0.4 |
//! | `GET /healthz` | `ok` while the daemon runs; never needs auth |
//!
//! The web threads only read the config snapshot and its counters, so a
//! slow or hostile HTTP client can stall the dashboard but never the proxy.
//! Other methods than GET and HEAD get 405, other paths 404. Clients reach
//! tiny_http only through [`gate`], which bounds connections, header size
//! and time, since tiny_http itself does not.
//!
//! With `web.token` or `web.username`/`web.password` set, every path but
//! `/healthz` needs them: `Authorization: Bearer TOKEN`, `?token=TOKEN`, or
//! HTTP basic auth. Config validation refuses a non-loopback address
//! without one of them.

pub mod gate;
pub mod report;
pub use report::{parse_rfc3339, rfc3339};

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use tiny_http::{Header, Method, Request, Response, Server, StatusCode};

use crate::config::Web as WebConfig;
use crate::context::Current;
use crate::stats::DaemonStats;

/// The dashboard page, embedded in the binary.
pub const DASHBOARD: &str = include_str!("dashboard.html");

/// Threads answering requests. Two, so that one slow client reading a
/// response does not hold up everyone else.
const HANDLERS: usize = 2;

/// What the handlers read.
pub struct State {
    /// The snapshot in force: a reload's new settings (the token, say)
    /// apply to the next request.
    pub current: Arc<Current>,
    pub stats: Arc<DaemonStats>,
    pub started: Instant,
}

/// A running web server: the gate on the public address, tiny_http behind
/// it on a private loopback port.
pub struct WebServer {
    server: Arc<Server>,
    addr: SocketAddr,
    threads: Vec<thread::JoinHandle<()>>,
    gate: Option<(smol::channel::Sender<()>, thread::JoinHandle<()>)>,
}

impl WebServer {
    /// Binds the dashboard's public address (before starting, so that its
    /// real port is known when the config snapshot is built).
    pub fn bind(config: &WebConfig) -> io::Result<std::net::TcpListener> {
        let listen = config.listen;
        std::net::TcpListener::bind(listen).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot listen on {listen} for the dashboard: {e}"))
        })
    }

    /// Starts the gate on `public` (from [`WebServer::bind`]) and the
    /// handler threads.
    pub fn start(public: std::net::TcpListener, state: Arc<State>) -> io::Result<WebServer> {
        let addr = public.local_addr()?;
        let private = SocketAddr::from(([127, 0, 0, 1], 0));
        let server = Server::http(private)
            .map_err(|e| io::Error::other(format!("cannot start the dashboard's HTTP server: {e}")))?;
        let inner =
            server.server_addr().to_ip().ok_or_else(|| io::Error::other("dashboard: no IP address"))?;
        let server = Arc::new(server);
        let mut threads = Vec::with_capacity(HANDLERS);
        for n in 0..HANDLERS {
            let (server, state) = (Arc::clone(&server), Arc::clone(&state));
            threads.push(
                thread::Builder::new().name(format!("socksbalance-web-{n}")).stack_size(256 * 1024).spawn(
                    move || {
                        for request in server.incoming_requests() {
                            handle(request, &state);
                        }
                    },
                )?,
            );
        }
        let (stop, stopped) = smol::channel::bounded(1);
        let gate = gate::start(public, inner, stopped)?;
        Ok(WebServer { server, addr, threads, gate: Some((stop, gate)) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the gate and the handler threads and waits for them.
    pub fn stop(mut self) {
        if let Some((stop, gate)) = self.gate.take() {
            stop.close();
            let _ = gate.join();
        }
        for _ in &self.threads {
            self.server.unblock();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Dashboard,
    Stats,
    Metrics,
    Health,
}

fn header(name: &str, value: &str) -> Header {
    // Only our own constant names and values reach here.
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
}

fn respond(request: Request, status: u16, content_type: &str, body: String, extra: &[(&str, &str)]) {
    let mut response = Response::from_string(body)
        .with_status_code(StatusCode(status))
        .with_header(header("Content-Type", content_type))
        .with_header(header("Cache-Control", "no-store"))
        .with_header(header("X-Content-Type-Options", "nosniff"));
    for (name, value) in extra {
        response = response.with_header(header(name, value));
    }
    // The client may have gone away; nothing to do about it.
    let _ = request.respond(response);
}

fn handle(request: Request, state: &State) {
    let snapshot = state.current.get();
    let config = &snapshot.config.web;
    let url = request.url().to_owned();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let route = match path {
        "/" | "/index.html" => Route::Dashboard,
        "/api/stats" => Route::Stats,
        "/metrics" => Route::Metrics,
        "/healthz" => Route::Health,
        _ => return respond(request, 404, "text/plain; charset=utf-8", "not found\n".into(), &[]),
    };
    if !matches!(request.method(), Method::Get | Method::Head) {
        return respond(
            request,
            405,
            "text/plain; charset=utf-8",
            "method not allowed: this API is read-only\n".into(),
            &[("Allow", "GET, HEAD")],
        );
    }
    if route != Route::Health && !authorized(&request, query, config) {
        let challenge = if config.basic.is_some() { "Basic realm=\"socksbalance\"" } else { "Bearer" };
        return respond(
            request,
            401,
            "text/plain; charset=utf-8",
            "unauthorized\n".into(),
            &[("WWW-Authenticate", challenge)],
        );
    }
    match route {
        Route::Dashboard => respond(
            request,
            200,
            "text/html; charset=utf-8",
            DASHBOARD.to_owned(),
            &[(
                "Content-Security-Policy",
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
            )],
        ),
        Route::Stats => {
            let report = report::gather(&snapshot, &state.stats, state.started);
            respond(request, 200, "application/json", report::to_json(&report), &[])
        }
        Route::Metrics => {
            let report = report::gather(&snapshot, &state.stats, state.started);
            respond(request, 200, "text/plain; version=0.0.4; charset=utf-8", report::to_prometheus(&report), &[])
        }
        Route::Health => respond(request, 200, "text/plain; charset=utf-8", "ok\n".into(), &[]),
    }
}

/// Whether the request carries the configured token or login; true when
/// neither is configured.
fn authorized(request: &Request, query: &str, config: &WebConfig) -> bool {
    if config.token.is_none() && config.basic.is_none() {
        return true;
    }
    let authorization = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.as_str().trim().to_owned());
    if let Some(token) = &config.token {
        let from_query = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "token")
            .map(|(_, v)| percent_decode(v));
        if from_query.is_some_and(|v| token.matches(&v)) {
            return true;
        }
        if let Some(bearer) = authorization.as_deref().and_then(|a| a.strip_prefix("Bearer ")) {
            if token.matches(bearer.trim().as_bytes()) {
                return true;
            }
        }
    }
    if let Some(basic) = &config.basic {
        let login = authorization
            .as_deref()
            .filter(|a| a.starts_with("Basic "))
            .and_then(crate::http::basic_credentials);
        if let Some((user, pass)) = login {
            return basic.matches(&user, &pass);
        }
    }
    false
}

/// `%XX` and `+` decoding for one query value; a malformed escape is kept
/// as it is.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 3 <= b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(percent_decode("a%2Bb+c%zz%4"), b"a+b c%zz%4");
        assert_eq!(percent_decode("%41"), b"A");
    }

    #[test]
    fn the_dashboard_fits_in_32_kib() {
        assert!(DASHBOARD.len() <= 32 * 1024, "dashboard is {} bytes", DASHBOARD.len());
        for forbidden in ["http://", "https://", "@import", "<link", "src=\""] {
            assert!(!DASHBOARD.contains(forbidden), "dashboard loads something external: {forbidden}");
        }
    }
}
