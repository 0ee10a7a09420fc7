//! A real SMTP server for the email tests, in the test process: the `mailin` crate's RFC 5321
//! session state machine (the one MailCrab serves with) behind a plain TCP listener. It offers no
//! STARTTLS, like a bare local relay, and keeps each message as received (headers and body).

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

pub struct Smtp {
    pub port: u16,
    mails: Arc<Mutex<Vec<String>>>,
}

/// Collects one message's DATA; stores it when the client ends it.
#[derive(Clone)]
struct Collect {
    mails: Arc<Mutex<Vec<String>>>,
    buf: Vec<u8>,
}

impl mailin::Handler for Collect {
    fn data_start(&mut self, _domain: &str, _from: &str, _is8bit: bool, _to: &[String]) -> mailin::Response {
        self.buf.clear();
        mailin::response::OK
    }
    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.buf.extend_from_slice(buf);
        Ok(())
    }
    fn data_end(&mut self) -> mailin::Response {
        self.mails.lock().unwrap().push(String::from_utf8_lossy(&self.buf).into_owned());
        mailin::response::OK
    }
}

impl Smtp {
    pub fn start() -> Smtp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let handler = Collect { mails: mails.clone(), buf: Vec::new() };
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let h = handler.clone();
                std::thread::spawn(move || serve(conn, h));
            }
        });
        Smtp { port, mails }
    }

    /// Raw messages delivered so far.
    pub fn messages(&self) -> Vec<String> {
        self.mails.lock().unwrap().clone()
    }
}

fn serve(conn: TcpStream, handler: Collect) {
    let ip = conn.peer_addr().map(|a| a.ip()).unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let mut out = conn.try_clone().unwrap();
    let mut session = mailin::SessionBuilder::new("fake-smtp.test").build(ip, handler);
    if session.greeting().write_to(&mut out).is_err() {
        return;
    }
    let mut reader = BufReader::new(conn);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let res = session.process(&line);
        match res.action {
            mailin::Action::NoReply => continue,
            mailin::Action::Close => {
                let _ = res.write_to(&mut out);
                return;
            }
            // Not offered, so never asked for.
            mailin::Action::UpgradeTls => return,
            mailin::Action::Reply => {
                if res.write_to(&mut out).and_then(|_| out.flush()).is_err() {
                    return;
                }
            }
        }
    }
}
