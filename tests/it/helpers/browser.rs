//! A real browser for the console's tests: Debian's headless Chromium driven over WebDriver by
//! its `chromedriver` (both installed by `scripts/services.sh`), one of each per test, on a port
//! of its own. Screenshots go to `target/console-screenshots/`.

use std::path::PathBuf;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use super::TestApp;

pub struct Browser {
    pub client: Client,
    /// The app's console, `http://127.0.0.1:<port>`.
    base: String,
    _driver: tokio::process::Child,
}

impl Browser {
    /// A new browser (a fresh profile: no cookie) pointed at `app`'s console, at `width` CSS
    /// pixels wide.
    pub async fn open(app: &TestApp, width: u32) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver (scripts/services.sh start installs chromium-driver)");
        super::wait_listening("chromedriver", port).await;
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                // Root in CI: Chromium's sandbox needs a user namespace it may not have.
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--disable-gpu", format!("--window-size={width},1000")],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session");
        let base = format!("http://{}", app.admin_addr.unwrap_or(app.addr));
        Self {
            client,
            base,
            _driver: driver,
        }
    }

    pub async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap_or_else(|error| panic!("opening {path}: {error}"));
    }

    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// Signs in through the sign-in page (the one the browser is on, which goes back where the
    /// console sent it from), as a person types it.
    pub async fn sign_in(&self, name: &str, secret: &str) {
        if !self.path().await.starts_with("/console/login") {
            self.goto("/console/login").await;
        }
        self.fill("input[name=name]", name).await;
        self.fill("input[name=secret]", secret).await;
        self.click("form button[type=submit]").await;
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let field = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|error| panic!("no {css} on {}: {error}", self.base));
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    /// Clicks `css` (a button that submits a form, a link) and waits for the page it loads.
    pub async fn click(&self, css: &str) {
        let element = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|error| panic!("no {css}: {error}"));
        self.navigating(|| async { element.click().await.unwrap() })
            .await;
    }

    /// Follows the link whose text is `text`, and waits for its page.
    pub async fn follow(&self, text: &str) {
        let link = self
            .client
            .find(Locator::LinkText(text))
            .await
            .unwrap_or_else(|error| panic!("no link {text:?}: {error}"));
        self.navigating(|| async { link.click().await.unwrap() })
            .await;
    }

    /// Runs `act`, which leaves the page, and waits until the next page has loaded: the old
    /// document carries a mark the new one does not.
    pub async fn navigating<F, Fut>(&self, act: F)
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        self.client
            .execute("window.__settleOldPage = true", vec![])
            .await
            .unwrap();
        act().await;
        super::poll_until(
            "the next page",
            std::time::Duration::from_secs(30),
            || async {
                let left = self
                .client
                .execute(
                    "return window.__settleOldPage !== true && document.readyState === 'complete'",
                    vec![],
                )
                .await
                .ok()?;
                (left == serde_json::Value::Bool(true)).then_some(())
            },
        )
        .await;
    }

    /// The visible text of the first element `css` matches.
    pub async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|error| panic!("no {css}: {error}"))
            .text()
            .await
            .unwrap()
    }

    /// Whether anything matches `css` on the page.
    pub async fn has(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .unwrap()
            .is_empty()
    }

    /// The whole page's visible text.
    pub async fn page_text(&self) -> String {
        self.text("body").await
    }

    /// Saves a screenshot of the window as `target/console-screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    pub async fn close(self) {
        self.client.close().await.unwrap();
    }
}
