//! A tiny HTTP receiver on 127.0.0.1 (actix-web) that records every request (method, path,
//! headers, body) and answers 200: the webhook receiver and the OTLP collector of the tests.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Received {
    /// `POST`, `GET`, …
    pub method: String,
    /// Request path (no query).
    pub path: String,
    /// Headers, names lower-case.
    pub headers: HashMap<String, String>,
    /// The raw body.
    pub body: Vec<u8>,
}

impl Received {
    /// A header's value (name lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The body as UTF-8 text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

type Log = Arc<Mutex<Vec<Received>>>;

/// The running receiver; stopped on drop.
pub struct HttpSink {
    port: u16,
    log: Log,
    handle: actix_web::dev::ServerHandle,
}

async fn record(req: HttpRequest, body: web::Bytes, log: web::Data<Log>) -> HttpResponse {
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                v.to_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    log.lock().unwrap().push(Received {
        method: req.method().to_string(),
        path: req.path().to_string(),
        headers,
        body: body.to_vec(),
    });
    HttpResponse::Ok().finish()
}

impl HttpSink {
    /// Starts on a free loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        Self::serve(TcpListener::bind("127.0.0.1:0")?)
    }

    /// Starts on `port` of 127.0.0.1 (e.g. a receiver that was down comes back).
    pub async fn start_on(port: u16) -> anyhow::Result<Self> {
        Self::serve(TcpListener::bind(("127.0.0.1", port))?)
    }

    fn serve(listener: TcpListener) -> anyhow::Result<Self> {
        let port = listener.local_addr()?.port();
        let log: Log = Arc::default();
        let data = web::Data::new(log.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
                .default_service(web::to(record))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)?
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(HttpSink { port, log, handle })
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:{port}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived (or `timeout`): the requests so far.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let got = self.received();
            if got.len() >= n || start.elapsed() > timeout {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops it (the port is closed when this returns).
    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

impl Drop for HttpSink {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        tokio::spawn(async move { handle.stop(false).await });
    }
}
