//! Binding the sockets a service listens on (gRPC and the admin port).

use std::time::Duration;

use tokio::net::TcpListener;

/// Binds the listening socket with `SO_REUSEADDR` (a restarted server must not wait for the
/// TIME_WAIT sockets of its previous life), retrying while the address is in use: 50051-50054
/// lie in Linux's ephemeral range, and a client connection that used one as its source port
/// holds it in TIME_WAIT for up to a minute (reserve the ports with
/// `net.ipv4.ip_local_reserved_ports` to avoid the wait altogether).
pub(crate) async fn bind(address: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let listen = || -> std::io::Result<TcpListener> {
        let socket = if address.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(address)?;
        socket.listen(1024)
    };
    let mut attempts = 0;
    loop {
        match listen() {
            // 350 × 200 ms outlasts TIME_WAIT's minute.
            Err(error) if error.kind() == std::io::ErrorKind::AddrInUse && attempts < 350 => {
                attempts += 1;
                tracing::warn!(%address, %error, "address in use; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            bound => return bound,
        }
    }
}
