//! A fake Slack on loopback: it takes what Kiln posts to a slash command's `response_url`,
//! and signs slash commands the way Slack does.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;

/// The fake server and what it received.
#[derive(Debug, Clone)]
pub struct FakeSlack {
    pub addr: SocketAddr,
    posted: Arc<Mutex<Vec<Value>>>,
}

impl FakeSlack {
    /// Starts the fake on `127.0.0.1:0`; it stops with the test's runtime.
    pub async fn start() -> Self {
        let posted: Arc<Mutex<Vec<Value>>> = Arc::default();
        let app = Router::new()
            .route("/commands/{team}/{id}/{token}", post(response_url))
            .with_state(posted.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, posted }
    }

    /// A `response_url` of this fake, as Slack would send one.
    pub fn response_url(&self, id: u32) -> String {
        format!("http://{}/commands/T1/{id}/token", self.addr)
    }

    /// Every answer received so far.
    pub fn answers(&self) -> Vec<Value> {
        self.posted.lock().expect("not poisoned").clone()
    }
}

async fn response_url(State(posted): State<Arc<Mutex<Vec<Value>>>>, Json(body): Json<Value>) {
    posted.lock().expect("not poisoned").push(body);
}

/// A slash-command body, as Slack form-encodes it.
pub fn slash_command(user_id: &str, user_name: &str, text: &str, response_url: &str) -> String {
    let fields = [
        ("token", "unused"),
        ("team_id", "T1"),
        ("channel_id", "C1"),
        ("user_id", user_id),
        ("user_name", user_name),
        ("command", "/kiln"),
        ("text", text),
        ("response_url", response_url),
    ];
    serde_urlencoded::to_string(fields).expect("a form")
}
