//! A real SMTP server for the email tests: Python's aiosmtpd (installed by .ci/run with pip),
//! started on a free port, delivering into a Maildir the test reads.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Smtp {
    pub port: u16,
    pub maildir: tempfile::TempDir,
    child: Child,
}

impl Smtp {
    pub fn start() -> Smtp {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let maildir = tempfile::tempdir().unwrap();
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir.path().join("mail"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m aiosmtpd (pip install aiosmtpd)");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(15), "aiosmtpd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Smtp { port, maildir, child }
    }

    /// Raw messages delivered so far.
    pub fn messages(&self) -> Vec<String> {
        let new: PathBuf = self.maildir.path().join("mail").join("new");
        std::fs::read_dir(new).map(|d| d.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok()).collect()).unwrap_or_default()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
