//! A TCP proxy on 127.0.0.1 in front of a database, that a test can cut (every open connection
//! closed, new ones closed at once), hang (a network partition: nothing passes, nothing closes)
//! and restore: the database "going away" without touching the server other tests share.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Up,
    Closed,
    Hung,
}

pub struct Proxy {
    pub port: u16,
    state: watch::Sender<State>,
    /// Connections turned away while cut.
    refused: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// Forwards a new port on 127.0.0.1 to `target` (`host:port`).
    pub fn start(target: &str) -> Proxy {
        let target: SocketAddr = target.parse().expect("target host:port");
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let port = std_listener.local_addr().expect("addr").port();
        let (state, _) = watch::channel(State::Up);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let states = state.clone();
        let refused = Arc::new(AtomicUsize::new(0));
        let counter = refused.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("listener");
                let accept = async {
                    loop {
                        let Ok((client, _)) = listener.accept().await else { continue };
                        tokio::spawn(forward(client, target, states.subscribe(), counter.clone()));
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
        });
        Proxy { port, state, refused, stop: Some(stop), thread: Some(thread) }
    }

    /// The server goes down: open connections are closed, new ones closed on arrival.
    pub fn cut(&self) {
        self.state.send_replace(State::Closed);
    }

    /// The network partitions: nothing passes and nothing is closed, so clients wait.
    pub fn hang(&self) {
        self.state.send_replace(State::Hung);
    }

    /// The database is back (connections held by a hang are closed).
    pub fn restore(&self) {
        self.state.send_replace(State::Up);
    }

    /// Waits until `n` connections have been turned away since the start: the client has met
    /// the outage (and tried again).
    pub async fn until_refused(&self, n: usize) {
        let start = Instant::now();
        while self.refused.load(Ordering::SeqCst) < n {
            assert!(start.elapsed() < Duration::from_secs(60), "the client never came back during the outage");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `url` (a database URL) pointed at this proxy instead.
    pub fn url(&self, url: &str) -> String {
        let mut u = url::Url::parse(url).expect("url");
        u.set_host(Some("127.0.0.1")).expect("host");
        u.set_port(Some(self.port)).expect("port");
        u.to_string()
    }
}

async fn forward(mut client: TcpStream, target: SocketAddr, mut state: watch::Receiver<State>, refused: Arc<AtomicUsize>) {
    let now = *state.borrow_and_update();
    match now {
        State::Closed => {
            refused.fetch_add(1, Ordering::SeqCst);
            return;
        }
        State::Hung => {
            let _ = state.wait_for(|s| *s == State::Up).await;
            return;
        }
        State::Up => {}
    }
    let Ok(mut server) = TcpStream::connect(target).await else { return };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        hung = async { state.wait_for(|s| *s != State::Up).await.map(|s| *s == State::Hung).unwrap_or(false) } => {
            if hung {
                let _ = state.wait_for(|s| *s == State::Up).await;
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
