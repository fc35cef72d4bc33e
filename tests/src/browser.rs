//! Debian's headless Chromium driven through WebDriver (Debian's `chromedriver`), for the
//! status page tests: open a page, read what a person sees (element text and attributes),
//! follow a link, take a screenshot.
//!
//! The W3C WebDriver protocol is a handful of JSON requests; they are sent with the
//! `reqwest` the tests already build rather than a WebDriver crate (`fantoccini` would add
//! its own hyper client stack and the `webdriver` crate's dependencies to every test
//! build for the seven requests used here).

use base64::Engine;
use serde_json::{Value, json};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The element key of the W3C protocol.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one browser session; both end on drop.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    base: String,
    client: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a headless Chromium session
    /// whose window is a phone's width (`width` × `height` CSS pixels).
    pub async fn start(width: u32, height: u32) -> Self {
        let port = crate::free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            // Its own process group: the browser processes it starts go with it.
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver; scripts/test.sh installs it)");
        let profile = tempfile::tempdir().unwrap();
        let mut b = Self {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            _profile: profile,
        };
        let until = Instant::now() + Duration::from_secs(30);
        while b.call("GET", "/status", None).await.is_err() {
            assert!(Instant::now() < until, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The flags keep Chromium off the network (this machine has none) and let it run
        // as root in a container.
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                    format!("--user-data-dir={}", b._profile.path().display()),
                    format!("--window-size={width},{height}"),
                ],
            },
        }}});
        let session = b
            .call("POST", "/session", Some(capabilities))
            .await
            .expect("a Chromium session");
        let id = session["sessionId"].as_str().unwrap().to_string();
        b.base = format!("{}/session/{id}", b.base);
        b
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.client.get(url),
            "DELETE" => self.client.delete(url),
            _ => self
                .client
                .post(url)
                .body(body.unwrap_or(json!({})).to_string()),
        };
        let answer = request
            .header("content-type", "application/json")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = answer.status();
        let v: Value = serde_json::from_slice(&answer.bytes().await.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        if status.is_success() {
            Ok(v["value"].clone())
        } else {
            Err(format!("{method} {path}: {status} {}", v["value"]))
        }
    }

    /// Opens `url` and waits for it to load.
    pub async fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })))
            .await
            .unwrap();
    }

    /// The page's source as the browser holds it.
    pub async fn source(&self) -> String {
        let v = self.call("GET", "/source", None).await.unwrap();
        v.as_str().unwrap().to_string()
    }

    async fn find(&self, css: &str) -> Option<String> {
        let v = self
            .call(
                "POST",
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await
            .ok()?;
        Some(v[ELEMENT].as_str()?.to_string())
    }

    /// The rendered text of the first element `css` selects; `None` if none does.
    pub async fn text(&self, css: &str) -> Option<String> {
        let e = self.find(css).await?;
        let v = self
            .call("GET", &format!("/element/{e}/text"), None)
            .await
            .ok()?;
        Some(v.as_str()?.to_string())
    }

    /// An attribute of the first element `css` selects.
    pub async fn attribute(&self, css: &str, name: &str) -> Option<String> {
        let e = self.find(css).await?;
        let v = self
            .call("GET", &format!("/element/{e}/attribute/{name}"), None)
            .await
            .ok()?;
        Some(v.as_str()?.to_string())
    }

    /// Clicks the first element `css` selects (a link: the next page loads).
    pub async fn click(&self, css: &str) {
        let e = self.find(css).await.unwrap_or_else(|| panic!("no {css}"));
        self.call("POST", &format!("/element/{e}/click"), Some(json!({})))
            .await
            .unwrap();
    }

    /// The URLs of every resource the page loaded after its document (images, styles,
    /// fonts: `performance.getEntriesByType("resource")`).
    pub async fn resources(&self) -> Vec<String> {
        let script = json!({
            "script": "return performance.getEntriesByType('resource').map(e => e.name);",
            "args": [],
        });
        let v = self
            .call("POST", "/execute/sync", Some(script))
            .await
            .unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|u| u.as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Saves a PNG of the window to `path` (its directory is created).
    pub async fn screenshot(&self, path: &Path) {
        let v = self.call("GET", "/screenshot", None).await.unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The driver and every browser process it started: its process group.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.wait();
    }
}
