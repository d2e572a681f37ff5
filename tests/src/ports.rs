//! Loopback ports the harness holds for as long as a test needs them.
//!
//! Picking a port by binding port 0 and closing the socket again leaves a
//! window in which another process (a parallel test's upstream, the source
//! port of an outgoing connection) can take it: the gateway or redis-server
//! then cannot bind, or a "dead" endpoint turns out to answer. So the
//! harness never lets go of a port it hands out. Both kinds of hold below
//! are loopback sockets bound without `listen()`:
//!
//! - [`PortLease`] is bound with `SO_REUSEADDR`. On Linux a bound socket
//!   keeps its port out of the kernel's choice for `bind(port 0)` and for
//!   outgoing connections, and an explicit bind to that port without
//!   `SO_REUSEADDR` fails. A process that binds the port *with*
//!   `SO_REUSEADDR` and listens succeeds, because the lease is not
//!   listening; Pingora's listeners and redis-server both set it. So the
//!   harness leases a port, writes its number into the child's config, and
//!   keeps the lease for the child's whole life, restarts and `-u`
//!   upgrades on the same port included.
//! - [`ClosedPort`] is bound without `SO_REUSEADDR`. Nothing can listen on
//!   it, so a connection to it is refused at once (a dead endpoint), and no
//!   other socket can bind it.
//!
//! What is still possible: a process that is told the leased number and
//! binds it with `SO_REUSEADDR` can take it. That is exactly how the
//! harness's own children get it; nothing else is given the number. The
//! semantics are Linux's (the harness also reads `/proc`); the unit tests
//! below check them on the machine that runs the suite.

use std::net::{Ipv4Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

/// A loopback port reserved for a child process that binds it with
/// `SO_REUSEADDR` (module doc); the load lab's, which its benches hold the
/// same way.
pub use breakwater_load::procs::PortLease;

/// A loopback port that refuses every connection for as long as this is
/// kept: an endpoint that is down (module doc).
#[derive(Debug)]
pub struct ClosedPort {
    _socket: Socket,
    addr: SocketAddr,
}

impl ClosedPort {
    /// Binds a port the kernel picks. Panics if no port can be bound.
    pub fn new() -> ClosedPort {
        let (socket, addr) = bind_loopback();
        ClosedPort {
            _socket: socket,
            addr,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `127.0.0.1:<port>`, for a cluster's `endpoints`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Default for ClosedPort {
    fn default() -> Self {
        Self::new()
    }
}

/// A TCP socket bound to `127.0.0.1:0` without `SO_REUSEADDR`, not
/// listening. The socket is close-on-exec (socket2's default), so children
/// do not inherit it.
fn bind_loopback() -> (Socket, SocketAddr) {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
        .expect("a TCP socket for a port reservation");
    socket
        .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
        .expect("an ephemeral loopback port");
    let addr = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("the reserved port's address");
    (socket, addr)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::net::{TcpListener, TcpStream};

    use super::*;

    /// What Pingora and redis-server do: `SO_REUSEADDR`, bind, listen.
    fn listen_reusing(addr: SocketAddr) -> std::io::Result<Socket> {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(128)?;
        Ok(socket)
    }

    #[test]
    fn a_child_binding_with_reuse_addr_takes_a_leased_port_and_serves_on_it() {
        let lease = PortLease::new().expect("a loopback port lease");
        let listener = listen_reusing(lease.addr()).expect("the child binds the leased port");
        let conn = TcpStream::connect(lease.addr()).expect("connects to the child");
        let (_, peer) = listener.accept().expect("the child accepts");
        assert_eq!(peer.as_socket(), conn.local_addr().ok());
        // Another child after the first one is gone, as on a restart.
        drop((conn, listener));
        listen_reusing(lease.addr()).expect("a restarted child binds it again");
        // On every interface too, as an admin on 0.0.0.0 does.
        let any = SocketAddr::from((Ipv4Addr::UNSPECIFIED, lease.port()));
        listen_reusing(any).expect("the wildcard address on the leased port");
    }

    #[test]
    fn others_cannot_take_a_leased_port() {
        let lease = PortLease::new().expect("a loopback port lease");
        let plain = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        assert!(
            plain.bind(&lease.addr().into()).is_err(),
            "a bind without SO_REUSEADDR fails"
        );
        // The kernel never picks it for port 0 or for an outgoing connection.
        let leases: Vec<PortLease> = (0..200)
            .map(|_| PortLease::new().expect("a loopback port lease"))
            .collect();
        let leased: HashSet<u16> = leases.iter().map(PortLease::port).collect();
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut picked = Vec::new();
        for _ in 0..500 {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            picked.push(l.local_addr().unwrap().port());
            let c = TcpStream::connect(server.local_addr().unwrap()).unwrap();
            picked.push(c.local_addr().unwrap().port());
            let _ = server.accept();
        }
        assert!(picked.iter().all(|p| !leased.contains(p)));
    }

    #[test]
    fn a_closed_port_refuses_connections_and_cannot_be_taken() {
        let closed = ClosedPort::new();
        let err = TcpStream::connect(closed.addr()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
        assert!(listen_reusing(closed.addr()).is_err());
        assert!(TcpListener::bind(closed.addr()).is_err());
    }
}
