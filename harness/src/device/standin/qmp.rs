//! qemu's machine protocol (QMP) on a unix socket, as much of it as saving and restoring a
//! stand-in's machine state takes: a command, its answer; events in between are skipped.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use crate::error::InfraError;

/// How long one command may take to be answered.
const ANSWER: Duration = Duration::from_secs(30);

pub struct Qmp {
    read: BufReader<OwnedReadHalf>,
    write: OwnedWriteHalf,
}

fn err(what: impl std::fmt::Display) -> InfraError {
    InfraError::Emulator(format!("qemu's QMP: {what}"))
}

impl Qmp {
    /// Connects to `socket` (qemu makes it a moment after it starts; tried until `within`),
    /// reads the greeting and leaves negotiation mode.
    pub async fn connect(socket: &Path, within: Duration) -> Result<Self, InfraError> {
        let deadline = Instant::now() + within;
        let stream = loop {
            match UnixStream::connect(socket).await {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => {
                    return Err(err(format!("cannot connect to {}: {e}", socket.display())))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let (read, write) = stream.into_split();
        let mut qmp = Self {
            read: BufReader::new(read),
            write,
        };
        qmp.message().await?;
        qmp.execute("qmp_capabilities", json!({})).await?;
        Ok(qmp)
    }

    async fn message(&mut self) -> Result<Value, InfraError> {
        let mut line = String::new();
        let n = tokio::time::timeout(ANSWER, self.read.read_line(&mut line))
            .await
            .map_err(|_| err(format!("no answer within {ANSWER:?}")))?
            .map_err(err)?;
        if n == 0 {
            return Err(err("qemu closed the socket"));
        }
        serde_json::from_str(&line).map_err(|e| err(format!("{e} in {line:?}")))
    }

    /// Runs `command` with `arguments`; its `return` value, or its error's description.
    pub async fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, InfraError> {
        let mut text = json!({ "execute": command, "arguments": arguments }).to_string();
        text.push('\n');
        self.write.write_all(text.as_bytes()).await.map_err(err)?;
        loop {
            let m = self.message().await?;
            if let Some(r) = m.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = m.get("error") {
                return Err(err(format!("{command}: {}", e["desc"].as_str().unwrap_or("failed"))));
            }
        }
    }

    /// The machine's run state (`running`, `paused`, `inmigrate`, `postmigrate`, ...).
    pub async fn status(&mut self) -> Result<String, InfraError> {
        let r = self.execute("query-status", json!({})).await?;
        Ok(r["status"].as_str().unwrap_or_default().to_string())
    }

    /// Polls `query-migrate` until the migration is done; an error names its state and reason.
    pub async fn wait_migrated(&mut self, within: Duration) -> Result<(), InfraError> {
        let deadline = Instant::now() + within;
        loop {
            let r = self.execute("query-migrate", json!({})).await?;
            match r["status"].as_str().unwrap_or_default() {
                "completed" => return Ok(()),
                s @ ("failed" | "cancelled") => {
                    return Err(err(format!(
                        "the migration {s}: {}",
                        r["error-desc"].as_str().unwrap_or("no reason given")
                    )))
                }
                s if Instant::now() > deadline => {
                    return Err(err(format!("the migration is still {s:?} after {within:?}")))
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}
