//! A real SMTP server for tests: Python's `aiosmtpd` on an ephemeral port, saving
//! every message it accepts as a file (`pip install aiosmtpd`).

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use crate::postgres_required;

/// Binds the port named by its second argument (0: an ephemeral one), prints the
/// port, and serves until its stdin closes, so it also ends when the test process
/// dies. A message's `.eml` appears, whole, before the client gets its 250 reply,
/// which comes after the number of seconds of its third argument. The most
/// messages it held at once, waiting for that reply, is kept in `most_at_once`.
const SERVER: &str = r#"
import asyncio
import os
import sys

from aiosmtpd.smtp import SMTP


class SaveToDirectory:
    def __init__(self, directory, delay):
        self.directory = directory
        self.delay = delay
        self.count = 0
        self.in_data = 0
        self.most_at_once = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        base = os.path.join(self.directory, "%06d" % self.count)
        with open(base + ".rcpt", "w") as f:
            f.write("\n".join(envelope.rcpt_tos))
        with open(base + ".tmp", "wb") as f:
            f.write(envelope.original_content)
        os.rename(base + ".tmp", base + ".eml")
        self.in_data += 1
        if self.in_data > self.most_at_once:
            self.most_at_once = self.in_data
            with open(os.path.join(self.directory, "most_at_once"), "w") as f:
                f.write(str(self.most_at_once))
        await asyncio.sleep(self.delay)
        self.in_data -= 1
        return "250 Message accepted for delivery"


async def main():
    handler = SaveToDirectory(sys.argv[1], float(sys.argv[3]))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="localhost"),
        "127.0.0.1",
        int(sys.argv[2]),
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


asyncio.run(main())
"#;

/// One message as the server accepted it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The envelope recipients (`RCPT TO`).
    pub rcpt_to: Vec<String>,
    /// The message as received (RFC 5322, CRLF line ends).
    pub raw: String,
}

/// An SMTP server that keeps what it receives; stopped when dropped.
pub struct SmtpServer {
    child: Child,
    // Held open: the server exits when it closes.
    _stdin: ChildStdin,
    port: u16,
    messages: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmtpServer {
    /// `None` (the test is skipped, loudly) only when `python3` or `aiosmtpd` is
    /// missing and `CI` is not set; under `CI=true` that fails the test.
    pub fn start() -> Option<SmtpServer> {
        Self::start_on(0)
    }

    /// Like [`SmtpServer::start`], on `port` (0: an ephemeral one), so a test can
    /// bring a server back where a stopped one listened.
    pub fn start_on(port: u16) -> Option<SmtpServer> {
        Self::start_with(port, Duration::ZERO)
    }

    /// Like [`SmtpServer::start`], answering each message only `reply_after`
    /// it arrived, as a busy relay does.
    pub fn start_slow(reply_after: Duration) -> Option<SmtpServer> {
        Self::start_with(0, reply_after)
    }

    fn start_with(port: u16, reply_after: Duration) -> Option<SmtpServer> {
        if let Err(why) = aiosmtpd_available() {
            assert!(
                !postgres_required(),
                "the SMTP test server cannot run ({why}); with CI set it must: pip install aiosmtpd"
            );
            eprintln!(
                "SKIPPED: SMTP test server unavailable ({why}); pip install aiosmtpd, or set CI=true to make this fail"
            );
            return None;
        }
        Some(Self::launch(port, reply_after))
    }

    fn launch(port: u16, reply_after: Duration) -> SmtpServer {
        let dir = tempfile::tempdir().expect("temporary directory");
        let script = dir.path().join("smtp_server.py");
        std::fs::write(&script, SERVER).expect("write the SMTP server script");
        let messages = dir.path().join("messages");
        std::fs::create_dir(&messages).expect("messages directory");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(&messages)
            .arg(port.to_string())
            .arg(reply_after.as_secs_f64().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python3");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let port = rx
            .recv_timeout(Duration::from_secs(20))
            .ok()
            .and_then(|line| line.trim().parse::<u16>().ok());
        let Some(port) = port else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the SMTP test server did not report its port (see its stderr above)");
        };
        SmtpServer {
            child,
            _stdin: stdin,
            port,
            messages,
            _dir: dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `smtp://127.0.0.1:PORT`: plain SMTP, no TLS, no authentication.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message received so far, oldest first, as raw RFC 5322 text.
    pub fn messages(&self) -> Vec<String> {
        self.deliveries().into_iter().map(|d| d.raw).collect()
    }

    /// Every message received so far with its envelope recipients, oldest first.
    pub fn deliveries(&self) -> Vec<Delivery> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.messages)
            .expect("read the messages directory")
            .map(|entry| entry.expect("directory entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "eml"))
            .collect();
        names.sort();
        names.iter().map(|path| read_delivery(path)).collect()
    }

    /// The most messages the server held at once before replying (0: none yet).
    pub fn most_at_once(&self) -> usize {
        std::fs::read_to_string(self.messages.join("most_at_once"))
            .map(|n| n.trim().parse().expect("a count"))
            .unwrap_or(0)
    }

    /// Stops the server now; its port refuses connections afterwards.
    pub fn stop(self) {}
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_delivery(eml: &Path) -> Delivery {
    let raw = std::fs::read_to_string(eml).expect("read a received message");
    let rcpt_to = std::fs::read_to_string(eml.with_extension("rcpt"))
        .expect("read a message's recipients")
        .lines()
        .map(str::to_owned)
        .collect();
    Delivery { rcpt_to, raw }
}

fn aiosmtpd_available() -> Result<(), String> {
    let output = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr)
            .lines()
            .last()
            .unwrap_or("python3 -c 'import aiosmtpd' failed")
            .to_owned())
    }
}

/// The value of header `name` (case-insensitive) in a raw message, unfolded.
pub fn header(raw: &str, name: &str) -> Option<String> {
    let head = raw.split("\r\n\r\n").next()?;
    let mut found: Option<String> = None;
    let mut in_match = false;
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if in_match && let Some(value) = found.as_mut() {
                value.push_str(line);
            }
            continue;
        }
        if found.is_some() {
            break;
        }
        in_match = line
            .split_once(':')
            .is_some_and(|(field, _)| field.eq_ignore_ascii_case(name));
        if in_match {
            found = line
                .split_once(':')
                .map(|(_, value)| value.trim().to_owned());
        }
    }
    found
}
