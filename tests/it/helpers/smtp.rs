//! A real SMTP server on loopback for the tests: `scripts/smtp_sink.py` (aiosmtpd), one per test
//! on a free port, keeping each mail it receives as a line of JSON.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use super::poll_until;

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Mail {
    pub to: Vec<String>,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
}

pub struct SmtpSink {
    pub port: u16,
    dir: PathBuf,
    /// Accept this many mails, then hang on the next ones (`--stall-after`).
    stall_after: Option<usize>,
    process: Option<tokio::process::Child>,
}

impl SmtpSink {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// A server that accepts `accepted` mails, then never answers the next ones.
    pub async fn stalling_after(accepted: usize) -> Self {
        Self::start_with(Some(accepted)).await
    }

    async fn start_with(stall_after: Option<usize>) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir =
            std::env::temp_dir().join(format!("settle-mail-{}", uuid::Uuid::new_v4().simple()));
        let mut sink = Self {
            port,
            dir,
            stall_after,
            process: None,
        };
        sink.resume().await;
        sink
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Stops the server: connections are refused until `resume`.
    pub async fn pause(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill().await.unwrap();
        }
    }

    pub async fn resume(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/smtp_sink.py");
        let mut command = tokio::process::Command::new("/usr/bin/python3");
        command.arg(script).args([
            "--port",
            &self.port.to_string(),
            "--dir",
            self.dir.to_str().unwrap(),
        ]);
        if let Some(accepted) = self.stall_after {
            command.args(["--stall-after", &accepted.to_string()]);
        }
        let process = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 with aiosmtpd (scripts/services.sh installs it)");
        self.process = Some(process);
        super::wait_listening("the SMTP sink", self.port).await;
    }

    pub fn mails(&self) -> Vec<Mail> {
        std::fs::read_to_string(self.dir.join("messages.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    pub async fn wait_for(&self, count: usize) -> Vec<Mail> {
        poll_until(
            &format!("{count} mails"),
            Duration::from_secs(30),
            || async {
                let mails = self.mails();
                (mails.len() >= count).then_some(mails)
            },
        )
        .await
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
