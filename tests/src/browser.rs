//! A real browser for the web pages' tests: Debian's Chromium, headless, driven over
//! WebDriver (chromedriver, started by the test on a port of its own) with `fantoccini`.
//! Screenshots go under the build's target folder, `kiln-screenshots/<test>/`.

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::services::START_THEM;
use crate::{free_port, wait_for};

/// A headless Chromium, and the chromedriver that drives it.
pub struct Browser {
    pub client: Client,
    driver: Child,
    /// Its profile, gone with it.
    _profile: tempfile::TempDir,
    shots: PathBuf,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("shots", &self.shots)
            .finish()
    }
}

impl Browser {
    /// Starts Chromium for the test `test` (its screenshots' folder).
    pub async fn start(test: &str) -> Self {
        let driver_path = std::env::var("KILN_TEST_CHROMEDRIVER")
            .unwrap_or_else(|_| panic!("KILN_TEST_CHROMEDRIVER is not set: {START_THEM}"));
        let port = free_port();
        // A process group of its own: the browser it starts ends with it.
        let driver = Command::new(&driver_path)
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{driver_path} does not start ({e}): {START_THEM}"));
        let url = format!("http://127.0.0.1:{port}");
        let probe = reqwest::Client::new();
        wait_for("chromedriver to answer", Duration::from_secs(30), || {
            let status = probe.get(format!("{url}/status")).send();
            async move { status.await.ok().filter(|a| a.status().is_success()) }
        })
        .await;
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1366,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&url)
            .await
            .expect("chromium starts under chromedriver");
        let shots = std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.join("kiln-screenshots").join(test)))
            .unwrap_or_else(|| std::env::temp_dir().join("kiln-screenshots").join(test));
        std::fs::create_dir_all(&shots).expect("the screenshots' folder");
        Self {
            client,
            driver,
            _profile: profile,
            shots,
        }
    }

    /// Opens `url`.
    pub async fn open(&self, url: &str) {
        self.client.goto(url).await.expect("the page opens");
    }

    /// The text of the element `css` shows, once it is there.
    pub async fn text(&self, css: &str) -> String {
        let element = self
            .client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no `{css}` on the page: {e}"));
        element.text().await.expect("its text")
    }

    /// Waits until the element `css` shows `text`; fails with what the page says.
    pub async fn wait_for_text(&self, css: &str, text: &str, within: Duration) {
        let started = std::time::Instant::now();
        loop {
            let shown = match self.client.find(Locator::Css(css)).await {
                Ok(element) => element.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if shown.contains(text) {
                return;
            }
            if started.elapsed() >= within {
                let url = self.client.current_url().await.map(|u| u.to_string());
                let page = match self.client.find(Locator::Css("main")).await {
                    Ok(main) => main.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                panic!(
                    "`{css}` did not show {text:?} within {within:?}; it shows {shown:?}\n\
                     at {url:?}, the page says: {page}"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs `script` (a function body) in the page, and what it returns.
    pub async fn run(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("the script fails: {e}\n{script}"))
    }

    /// Runs `script`, a function body that calls `arguments[0]` with its answer.
    pub async fn run_async(&self, script: &str) -> Value {
        self.client
            .execute_async(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("the script fails: {e}\n{script}"))
    }

    /// The status and body of `url`, fetched by the page (with its cookies).
    pub async fn fetch(&self, url: &str) -> (u64, String) {
        let answer = self
            .run_async(&format!(
                "const done = arguments[0];
                 fetch({url:?}, {{ headers: {{ accept: 'text/html' }} }})
                   .then(async (r) => done([r.status, await r.text()]))
                   .catch((e) => done([0, String(e)]));"
            ))
            .await;
        (
            answer[0].as_u64().unwrap_or_default(),
            answer[1].as_str().unwrap_or_default().to_owned(),
        )
    }

    /// Saves a screenshot of the page as `<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("the screenshot is saved");
    }

    /// Ends the browser.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.driver.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.driver.wait();
    }
}
