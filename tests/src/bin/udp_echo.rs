//! A UDP echo server for the traffic tests' image: answers each datagram
//! with the datagram and the sender's address as the server saw it.
//!   udp_echo [PORT]   (default 5353)

fn main() -> std::io::Result<()> {
    let port = std::env::args()
        .nth(1)
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(5353);
    let socket = std::net::UdpSocket::bind(("0.0.0.0", port))?;
    let mut buf = [0u8; 2048];
    loop {
        let (n, from) = socket.recv_from(&mut buf)?;
        let mut reply = buf[..n].to_vec();
        reply.extend_from_slice(format!(" from {from}").as_bytes());
        socket.send_to(&reply, from)?;
    }
}
