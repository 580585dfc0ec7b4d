//! A TCP proxy a test can cut and restore: the network between the engine and Postgres, so a
//! test can take the database away without stopping a server other tests share.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Forwards connections on [`TcpProxy::addr`] to a target.
pub struct TcpProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    target: SocketAddr,
    stop: Mutex<Arc<AtomicBool>>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl TcpProxy {
    /// Starts forwarding from a free loopback port to `target`.
    pub fn start(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy binds");
        let addr = listener.local_addr().expect("proxy address");
        let proxy = TcpProxy {
            addr,
            target,
            stop: Mutex::new(Arc::new(AtomicBool::new(false))),
            open: Arc::new(Mutex::new(Vec::new())),
        };
        proxy.accept_on(listener);
        proxy
    }

    /// Cuts the network: open connections are reset, new ones refused.
    pub fn cut(&self) {
        self.stop
            .lock()
            .expect("stop flag")
            .store(true, Ordering::SeqCst);
        // The accept loop notices within its poll interval and closes the port.
        std::thread::sleep(Duration::from_millis(50));
        for stream in self.open.lock().expect("open streams").drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Restores the network on the same port.
    pub fn restore(&self) {
        let listener = (0..50)
            .find_map(|_| {
                TcpListener::bind(self.addr)
                    .map_err(|_| std::thread::sleep(Duration::from_millis(20)))
                    .ok()
            })
            .expect("proxy binds its port again");
        self.accept_on(listener);
    }

    fn accept_on(&self, listener: TcpListener) {
        let stop = Arc::new(AtomicBool::new(false));
        *self.stop.lock().expect("stop flag") = stop.clone();
        listener.set_nonblocking(true).expect("nonblocking");
        let target = self.target;
        let open = self.open.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        let Ok(server) = TcpStream::connect(target) else {
                            continue;
                        };
                        pipe(&client, &server, &open);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

fn pipe(client: &TcpStream, server: &TcpStream, open: &Mutex<Vec<TcpStream>>) {
    let (Ok(c1), Ok(c2), Ok(s1), Ok(s2)) = (
        client.try_clone(),
        client.try_clone(),
        server.try_clone(),
        server.try_clone(),
    ) else {
        return;
    };
    let mut registry = open.lock().expect("open streams");
    registry.extend([c1, s1]);
    drop(registry);
    let (Ok(c3), Ok(s3)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    std::thread::spawn(move || copy(c2, s3));
    std::thread::spawn(move || copy(s2, c3));
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
