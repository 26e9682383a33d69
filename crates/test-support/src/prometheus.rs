//! A real Prometheus server (Debian's `prometheus` package) started by a
//! test: its own config scraping the given targets every second, its own
//! storage directory and a free loopback port. Dropping it stops it and
//! deletes the directory.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// How long Prometheus may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one HTTP exchange with it may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// A Prometheus owned by a test.
pub struct Prometheus {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`host:port`, path `/metrics`)
    /// every second. Panics with the fix if it is not installed or does not
    /// become ready.
    pub fn start(targets: &[SocketAddr]) -> Prometheus {
        let dir = std::env::temp_dir().join(format!(
            "cwasi-prometheus-{}-{}",
            std::process::id(),
            crate::free_port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the Prometheus directory");
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: cwasi\n    static_configs:\n      - targets: [{}]\n",
            list.join(", ")
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("write prometheus.yml");
        let addr: SocketAddr = format!("127.0.0.1:{}", crate::free_port()).parse().unwrap();
        let child = crate::process::spawn_service(
            Command::new("prometheus")
                .arg(format!(
                    "--config.file={}",
                    dir.join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}")),
            &dir.join("prometheus.log"),
            "apt-get install prometheus",
        );
        let p = Prometheus { child, dir, addr };
        let deadline = Instant::now() + READY_TIMEOUT;
        let ready = |p: &Prometheus| p.get("/-/ready").is_some_and(|(status, _)| status == 200);
        while !ready(&p) {
            assert!(
                Instant::now() < deadline,
                "prometheus was not ready within {READY_TIMEOUT:?}; its log:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// Runs an instant PromQL query through the HTTP API; the `data.result`
    /// vector as `(labels, value)` pairs. Panics if the API answers with an
    /// error.
    pub fn query(&self, promql: &str) -> Vec<(serde_json::Value, f64)> {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let (status, body) = self
            .get(&path)
            .unwrap_or_else(|| panic!("prometheus did not answer {promql}"));
        let json: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("prometheus answered {status} with no JSON ({e}): {body}"));
        assert_eq!(json["status"], "success", "query {promql}: {body}");
        json["data"]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("query {promql}: no result vector: {body}"))
            .iter()
            .map(|r| {
                let value = r["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN);
                (r["metric"].clone(), value)
            })
            .collect()
    }

    /// One `GET` on its HTTP port: status and body, or `None` if it does
    /// not answer within [`HTTP_TIMEOUT`].
    fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.addr, path)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One HTTP/1.0 `GET` (a test's own client, bounded by [`HTTP_TIMEOUT`]):
/// status and body, or `None` on any failure.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT).ok()?;
    s.set_read_timeout(Some(HTTP_TIMEOUT)).ok()?;
    s.set_write_timeout(Some(HTTP_TIMEOUT)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// Percent-encodes a query parameter.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
