//! Client halves of the streaming protocols, shared by the streaming and quickstart tests.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The HTTP/1.1 upgrade, as client-go's SPDY round tripper does it; returns the connection
/// and the protocol the server chose.
pub async fn spdy_upgrade(url: &str, protocols: &[&str]) -> Result<(TcpStream, String), String> {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut tcp = TcpStream::connect(host).await.unwrap();
    let mut head = format!(
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
    );
    for protocol in protocols {
        head.push_str(&format!("X-Stream-Protocol-Version: {protocol}\r\n"));
    }
    head.push_str("Content-Length: 0\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.unwrap();
    // Byte by byte: what follows the response head is already SPDY.
    let mut response = Vec::new();
    while !response.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        if tcp.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        response.push(byte[0]);
    }
    let response = String::from_utf8_lossy(&response).to_string();
    if !response.starts_with("HTTP/1.1 101") {
        return Err(response);
    }
    let chosen = response
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("x-stream-protocol-version")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default();
    Ok((tcp, chosen))
}

/// One HTTP/1.0 GET of `path` on the pod's `port`, through a port-forward URL over SPDY
/// (as `crictl port-forward` and kubectl do); returns the whole response.
pub async fn port_forward_get(url: &str, port: u16, path: &str) -> String {
    use berth::streaming::spdy::{Headers, Session, SessionConfig};
    let (tcp, chosen) = spdy_upgrade(url, &["portforward.k8s.io"])
        .await
        .expect("SPDY upgrade");
    assert_eq!(chosen, "portforward.k8s.io");
    let (session, _incoming) = Session::client(tcp, SessionConfig::default());
    let headers = |kind: &str| {
        Headers::new()
            .with("streamtype", kind)
            .with("port", port.to_string())
            .with("requestid", "0")
    };
    let _error = session.open_stream(headers("error"), false).await.unwrap();
    let mut data = session.open_stream(headers("data"), false).await.unwrap();
    data.writer
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut page = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        data.reader.read_to_end(&mut page),
    )
    .await
    .expect("the page came in time")
    .unwrap();
    session.close().await;
    String::from_utf8_lossy(&page).to_string()
}
