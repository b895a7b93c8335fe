//! A TCP proxy on loopback that can black-hole the links it carries.
//!
//! [`TcpProxy::black_hole`] makes every link open at that moment stop forwarding in both
//! directions while its sockets stay open — a peer that went silent without closing anything
//! (a partition, a crashed host, a dropped route). The kernel keeps acknowledging what the
//! client sends, so neither TCP retransmission nor `TCP_USER_TIMEOUT` ever ends such a link:
//! it is silent for as long as the test wants. Links opened afterwards are forwarded normally,
//! as a reconnect to a healthy path would be.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// A proxy from a free loopback port to `127.0.0.1:upstream`; stopped on drop.
pub struct TcpProxy {
    pub port: u16,
    links: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
    stop: Arc<AtomicBool>,
}

impl TcpProxy {
    pub fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let links: Arc<Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (accept_links, accept_stop) = (links.clone(), stop.clone());
        thread::spawn(move || {
            while !accept_stop.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(_) => {
                        thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let silent = Arc::new(AtomicBool::new(false));
                accept_links.lock().unwrap().push(silent.clone());
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let (silent, stop) = (silent.clone(), accept_stop.clone());
                    thread::spawn(move || pump(from, to, &silent, &stop));
                }
            }
        });
        Self { port, links, stop }
    }

    /// Every link open now stops forwarding, for good, and keeps its sockets open.
    pub fn black_hole(&self) {
        for link in self.links.lock().unwrap().iter() {
            link.store(true, Ordering::SeqCst);
        }
    }

    /// Links opened so far.
    pub fn links(&self) -> usize {
        self.links.lock().unwrap().len()
    }
}

/// Copies `from` to `to` until either closes; once `silent`, holds both open and forwards
/// nothing until the proxy stops.
fn pump(mut from: TcpStream, mut to: TcpStream, silent: &AtomicBool, stop: &AtomicBool) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buf = [0u8; 16 * 1024];
    while !stop.load(Ordering::SeqCst) {
        if silent.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(20));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if silent.load(Ordering::SeqCst) {
                    continue; // swallowed: the black hole opened while this was read
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
