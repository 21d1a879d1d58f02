//! Exec, attach and port-forward through the streaming server, with small clients written
//! here: a raw HTTP/1.1 upgrade to SPDY/3.1 (then berth's own SPDY session in the client
//! role) and a WebSocket client, as crictl and the kubelet speak them.
mod common;

use std::time::Duration;

use berth::cri::api as cri;
use berth::cri::api::runtime_service_client::RuntimeServiceClient;
use berth::streaming::spdy::{Headers, Session, SessionConfig};
use bytes::Bytes;
use common::streaming::spdy_upgrade;
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tonic::transport::Channel;

const NGINX: &str = "docker.io/e2e-test-images/nginx:1.14-2";

async fn container(
    rt: &mut RuntimeServiceClient<Channel>,
    pod: &Pod,
    name: &str,
    image: &str,
    command: &[&str],
    configure: impl FnOnce(&mut cri::ContainerConfig),
) -> String {
    let mut config = cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(cri::LinuxContainerConfig::default()),
        ..Default::default()
    };
    configure(&mut config);
    let id = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.config.clone()),
        })
        .await
        .expect("create")
        .into_inner()
        .container_id;
    rt.start_container(cri::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("start");
    id
}

fn exec_request(id: &str, cmd: &[&str], stdin: bool, tty: bool) -> cri::ExecRequest {
    cri::ExecRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
    }
}

async fn exec_url(rt: &mut RuntimeServiceClient<Channel>, request: cri::ExecRequest) -> String {
    rt.exec(request).await.expect("Exec").into_inner().url
}

/// What a session brought back.
#[derive(Debug, Default)]
struct Outcome {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    error: Vec<u8>,
}

impl Outcome {
    fn status(&self) -> serde_json::Value {
        serde_json::from_slice(&self.error).unwrap_or_else(|e| {
            panic!(
                "error channel {:?}: {e}",
                String::from_utf8_lossy(&self.error)
            )
        })
    }

    fn exit_code(&self) -> i32 {
        let status = self.status();
        if status["status"] == "Success" {
            return 0;
        }
        assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
        status["details"]["causes"][0]["message"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }
}

// ---------------------------------------------------------------- WebSocket client

async fn ws_connect(url: &str, protocols: &str) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let url = url.replacen("http://", "ws://", 1);
    let mut request = url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", protocols.parse().unwrap());
    let host = request.uri().authority().unwrap().to_string();
    let tcp = TcpStream::connect(host).await.unwrap();
    let (ws, response) = tokio_tungstenite::client_async(request, tcp)
        .await
        .expect("WebSocket handshake");
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        protocols.split(',').next().unwrap().trim()
    );
    ws
}

/// Sends `stdin` (then closes it, v5) and `resize`, reads until the server closes.
async fn ws_session(
    mut ws: tokio_tungstenite::WebSocketStream<TcpStream>,
    stdin: Option<&[u8]>,
    resize: Option<&str>,
) -> Outcome {
    if let Some(size) = resize {
        let mut frame = vec![4u8];
        frame.extend_from_slice(size.as_bytes());
        ws.send(Message::Binary(frame.into())).await.unwrap();
    }
    if let Some(data) = stdin {
        let mut frame = vec![0u8];
        frame.extend_from_slice(data);
        ws.send(Message::Binary(frame.into())).await.unwrap();
        ws.send(Message::Binary(vec![255u8, 0].into()))
            .await
            .unwrap();
    }
    let mut outcome = Outcome::default();
    let read = async {
        while let Some(message) = ws.next().await {
            let data = match message {
                Ok(Message::Binary(data)) => data,
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            let Some((&channel, rest)) = data.split_first() else {
                continue;
            };
            match channel {
                1 => outcome.stdout.extend_from_slice(rest),
                2 => outcome.stderr.extend_from_slice(rest),
                3 => outcome.error.extend_from_slice(rest),
                other => panic!("unexpected channel {other}"),
            }
        }
    };
    tokio::time::timeout(common::slow(Duration::from_secs(60)), read)
        .await
        .expect("the session ended in time");
    outcome
}

// ---------------------------------------------------------------- SPDY client

/// An exec or attach over SPDY, as client-go's v4 executor runs it.
async fn spdy_session(
    url: &str,
    stdin: Option<Vec<u8>>,
    tty: bool,
    resize: Option<&str>,
) -> Outcome {
    let (tcp, chosen) = spdy_upgrade(url, &["v4.channel.k8s.io", "v3.channel.k8s.io"])
        .await
        .expect("SPDY upgrade");
    assert_eq!(chosen, "v4.channel.k8s.io");
    let (session, _incoming) = Session::client(tcp, SessionConfig::default());
    let open = |kind: &str| Headers::new().with("streamtype", kind);
    let mut error = session.open_stream(open("error"), false).await.unwrap();
    let stdin_stream = match stdin {
        Some(_) => Some(session.open_stream(open("stdin"), false).await.unwrap()),
        None => None,
    };
    let mut stdout = session.open_stream(open("stdout"), false).await.unwrap();
    let stderr = match tty {
        false => Some(session.open_stream(open("stderr"), false).await.unwrap()),
        true => None,
    };
    let resize_stream = match tty {
        true => Some(session.open_stream(open("resize"), false).await.unwrap()),
        false => None,
    };
    // Held until the end: dropping a writer half-closes its stream.
    let _resize_writer = match (resize, resize_stream) {
        (Some(size), Some(stream)) => {
            let mut writer = stream.writer;
            writer.write_all(size.as_bytes()).await.unwrap();
            Some(writer)
        }
        _ => None,
    };
    if let (Some(data), Some(stream)) = (stdin, stdin_stream) {
        let mut writer = stream.writer;
        tokio::spawn(async move {
            writer.write_all(&data).await.unwrap();
            writer.shutdown().await.unwrap();
        });
    }
    let read_all = |mut reader: berth::streaming::spdy::StreamReader| async move {
        let mut out = Vec::new();
        let _ = reader.read_to_end(&mut out).await;
        out
    };
    let stderr_task = stderr.map(|s| tokio::spawn(read_all(s.reader)));
    let outcome = async {
        let mut outcome = Outcome::default();
        stdout
            .reader
            .read_to_end(&mut outcome.stdout)
            .await
            .unwrap();
        if let Some(task) = stderr_task {
            outcome.stderr = task.await.unwrap();
        }
        error.reader.read_to_end(&mut outcome.error).await.unwrap();
        outcome
    };
    tokio::time::timeout(common::slow(Duration::from_secs(60)), outcome)
        .await
        .expect("the session ended in time")
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread")]
async fn exec_over_websocket_reports_output_exit_codes_and_takes_stdin() {
    let daemon = TestDaemon::start().await;
    let (mut rt, pod) = busybox_pod(&daemon, "ws-exec").await;
    let id = container(
        &mut rt,
        &pod,
        "sleeper",
        BUSYBOX,
        &["sleep", "3600"],
        |_| {},
    )
    .await;

    let url = exec_url(
        &mut rt,
        exec_request(
            &id,
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            false,
            false,
        ),
    )
    .await;
    let outcome = ws_session(ws_connect(&url, "v5.channel.k8s.io").await, None, None).await;
    assert_eq!(outcome.stdout, b"out\n");
    assert_eq!(outcome.stderr, b"err\n");
    assert_eq!(outcome.exit_code(), 3);

    // v4: stdin ends when the client goes quiet; cat echoes it back, exit 0 is Success.
    let url = exec_url(&mut rt, exec_request(&id, &["cat"], true, false)).await;
    let outcome = ws_session(
        ws_connect(&url, "v5.channel.k8s.io, v4.channel.k8s.io").await,
        Some(b"hello through stdin\n"),
        None,
    )
    .await;
    assert_eq!(outcome.stdout, b"hello through stdin\n");
    assert_eq!(outcome.exit_code(), 0);

    // A terminal: output is one stream, and the window size the client sets is the pty's.
    let url = exec_url(
        &mut rt,
        exec_request(&id, &["sh", "-c", "sleep 1; stty size; tty"], false, true),
    )
    .await;
    let outcome = ws_session(
        ws_connect(&url, "v5.channel.k8s.io").await,
        None,
        Some(r#"{"Width":123,"Height":45}"#),
    )
    .await;
    let text = String::from_utf8_lossy(&outcome.stdout).to_string();
    // The pty is the container's own: it has a name in the container's /dev/pts.
    assert!(
        text.starts_with("45 123\r\n/dev/pts/"),
        "{text:?} {outcome:?}"
    );
    assert!(outcome.stderr.is_empty());
    assert_eq!(outcome.exit_code(), 0);

    stop_pod(&mut rt, &pod.id).await;
    remove_pod(&mut rt, &pod.id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_over_spdy_carries_100_mib_and_exit_codes() {
    let daemon = TestDaemon::start().await;
    let (mut rt, pod) = busybox_pod(&daemon, "spdy-exec").await;
    let id = container(
        &mut rt,
        &pod,
        "sleeper",
        BUSYBOX,
        &["sleep", "3600"],
        |_| {},
    )
    .await;

    let url = exec_url(
        &mut rt,
        exec_request(
            &id,
            &["sh", "-c", "echo out; echo err >&2; exit 7"],
            false,
            false,
        ),
    )
    .await;
    let outcome = spdy_session(&url, None, false, None).await;
    assert_eq!(outcome.stdout, b"out\n");
    assert_eq!(outcome.stderr, b"err\n");
    assert_eq!(outcome.exit_code(), 7);

    let url = exec_url(&mut rt, exec_request(&id, &["cat"], true, false)).await;
    let input: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let outcome = spdy_session(&url, Some(input.clone()), false, None).await;
    assert!(outcome.stdout == input, "stdin came back whole through cat");
    assert_eq!(outcome.exit_code(), 0);

    const SIZE: usize = 100 * 1024 * 1024;
    let url = exec_url(
        &mut rt,
        exec_request(
            &id,
            &["head", "-c", &SIZE.to_string(), "/dev/urandom"],
            false,
            false,
        ),
    )
    .await;
    let started = std::time::Instant::now();
    let outcome = spdy_session(&url, None, false, None).await;
    let elapsed = started.elapsed();
    assert_eq!(
        outcome.stdout.len(),
        SIZE,
        "100 MiB through exec without loss"
    );
    assert_eq!(outcome.exit_code(), 0);
    println!(
        "100 MiB through SPDY exec in {elapsed:?} ({:.0} MiB/s, debug build)",
        100.0 / elapsed.as_secs_f64()
    );

    let url = exec_url(
        &mut rt,
        exec_request(&id, &["sh", "-c", "sleep 1; stty size"], true, true),
    )
    .await;
    let outcome = spdy_session(
        &url,
        Some(Vec::new()),
        true,
        Some(r#"{"Width":90,"Height":30}"#),
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&outcome.stdout), "30 90\r\n");

    stop_pod(&mut rt, &pod.id).await;
    remove_pod(&mut rt, &pod.id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_reaches_the_main_process_and_stdin_once_closes_its_stdin() {
    let daemon = TestDaemon::start().await;
    let (mut rt, pod) = busybox_pod(&daemon, "attach").await;
    let id = container(
        &mut rt,
        &pod,
        "reader",
        BUSYBOX,
        &[
            "sh",
            "-c",
            "while read line; do echo got $line; echo err $line >&2; done; echo stdin closed",
        ],
        |c| {
            c.stdin = true;
            c.stdin_once = true;
        },
    )
    .await;
    let attach = |stdin| cri::AttachRequest {
        container_id: id.clone(),
        stdin,
        tty: false,
        stdout: true,
        stderr: true,
    };
    // A watcher over WebSocket sees the output of another client's input.
    let url = rt.attach(attach(false)).await.unwrap().into_inner().url;
    let mut watcher = ws_connect(&url, "v4.channel.k8s.io").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let url = rt.attach(attach(true)).await.unwrap().into_inner().url;
    let outcome = spdy_session(&url, Some(b"one\ntwo\n".to_vec()), false, None).await;
    // stdin_once: this client's stdin ending closes the container's stdin, so it exits.
    assert_eq!(
        String::from_utf8_lossy(&outcome.stdout),
        "got one\ngot two\nstdin closed\n"
    );
    assert_eq!(
        String::from_utf8_lossy(&outcome.stderr),
        "err one\nerr two\n"
    );
    assert_eq!(outcome.exit_code(), 0);

    let mut seen = Vec::new();
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_secs(10), watcher.next()).await
    {
        match message {
            Message::Binary(data) if data.first() == Some(&1) => seen.extend_from_slice(&data[1..]),
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert_eq!(
        String::from_utf8_lossy(&seen),
        "got one\ngot two\nstdin closed\n"
    );

    // The container has exited: a new attach is refused.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let err = rt.attach(attach(true)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");

    stop_pod(&mut rt, &pod.id).await;
    remove_pod(&mut rt, &pod.id).await;
}

/// An HTTP GET through a forwarded connection: the page nginx serves.
async fn http_get(
    mut reader: impl AsyncReadExt + Unpin,
    mut writer: impl AsyncWriteExt + Unpin,
) -> String {
    writer
        .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut page = Vec::new();
    tokio::time::timeout(
        common::slow(Duration::from_secs(20)),
        reader.read_to_end(&mut page),
    )
    .await
    .expect("the page came in time")
    .unwrap();
    String::from_utf8_lossy(&page).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn port_forward_reaches_a_web_server_in_the_pod_over_spdy_and_websocket() {
    let daemon = TestDaemon::start().await;
    let (mut rt, pod) = busybox_pod(&daemon, "forward").await;
    pull(&daemon, NGINX).await;
    container(&mut rt, &pod, "web", NGINX, &[], |_| {}).await;
    let forward = |rt: &mut RuntimeServiceClient<Channel>| {
        let mut rt = rt.clone();
        let pod_id = pod.id.clone();
        async move {
            rt.port_forward(cri::PortForwardRequest {
                pod_sandbox_id: pod_id,
                port: vec![80],
            })
            .await
            .unwrap()
            .into_inner()
            .url
        }
    };
    // nginx takes a moment to listen.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // SPDY: two connections at once on one session, each an error + data stream pair.
    let (tcp, chosen) = spdy_upgrade(&forward(&mut rt).await, &["portforward.k8s.io"])
        .await
        .unwrap();
    assert_eq!(chosen, "portforward.k8s.io");
    let (session, _incoming) = Session::client(tcp, SessionConfig::default());
    let mut pages = Vec::new();
    for request_id in ["0", "1"] {
        let headers = |kind: &str| {
            Headers::new()
                .with("streamtype", kind)
                .with("port", "80")
                .with("requestid", request_id)
        };
        let error = session.open_stream(headers("error"), false).await.unwrap();
        let data = session.open_stream(headers("data"), false).await.unwrap();
        pages.push(tokio::spawn(async move {
            let _error = error;
            http_get(data.reader, data.writer).await
        }));
    }
    for page in pages {
        let page = page.await.unwrap();
        assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
        assert!(page.contains("nginx"), "{page}");
    }
    // A port nobody listens on: the error stream says so.
    let headers = |kind: &str| {
        Headers::new()
            .with("streamtype", kind)
            .with("port", "81")
            .with("requestid", "2")
    };
    let mut error = session.open_stream(headers("error"), false).await.unwrap();
    let _data = session.open_stream(headers("data"), false).await.unwrap();
    let mut message = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        error.reader.read_to_string(&mut message),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(message.contains("port 81"), "{message}");
    session.close().await;

    // WebSocket with channel framing: channel 0 data, 1 errors, each opened by the port.
    let url = format!("{}?port=80", forward(&mut rt).await);
    let mut ws = ws_connect(&url, "v4.channel.k8s.io").await;
    let mut request = vec![0u8];
    request.extend_from_slice(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n");
    ws.send(Message::Binary(request.into())).await.unwrap();
    let mut page = Vec::new();
    let mut prefixes = 0;
    while let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await
    {
        let Message::Binary(data) = message else {
            break;
        };
        match (data[0], prefixes < 2) {
            (0 | 1, true) => {
                assert_eq!(&data[1..], &80u16.to_le_bytes());
                prefixes += 1;
            }
            (0, false) => page.extend_from_slice(&data[1..]),
            (channel, _) => panic!(
                "channel {channel}: {:?}",
                String::from_utf8_lossy(&data[1..])
            ),
        }
        if page.windows(7).any(|w| w == b"</html>") {
            break;
        }
    }
    let page = String::from_utf8_lossy(&page);
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");

    // WebSocket tunnel (client-go's port-forward over WebSocket): SPDY inside binary messages.
    let ws = ws_connect(&forward(&mut rt).await, "SPDY/3.1+portforward.k8s.io").await;
    let (session, _incoming) = Session::client(ws_bytes(ws), SessionConfig::default());
    let headers = |kind: &str| {
        Headers::new()
            .with("streamtype", kind)
            .with("port", "80")
            .with("requestid", "0")
    };
    let _error = session.open_stream(headers("error"), false).await.unwrap();
    let data = session.open_stream(headers("data"), false).await.unwrap();
    let page = http_get(data.reader, data.writer).await;
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    session.close().await;

    stop_pod(&mut rt, &pod.id).await;
    remove_pod(&mut rt, &pod.id).await;
}

/// A WebSocket as a byte stream (the tunnel's client side), through a duplex pipe.
fn ws_bytes(ws: tokio_tungstenite::WebSocketStream<TcpStream>) -> tokio::io::DuplexStream {
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let (mut read_half, mut write_half) = tokio::io::split(ours);
    let (mut sink, mut stream) = ws.split();
    tokio::spawn(async move {
        while let Some(Ok(Message::Binary(data))) = stream.next().await {
            if write_half.write_all(&data).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = read_half.read(&mut buf).await {
            if n == 0
                || sink
                    .send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
                    .await
                    .is_err()
            {
                break;
            }
        }
    });
    theirs
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_requests_are_checked_and_tokens_are_single_use() {
    let daemon = TestDaemon::start().await;
    let (mut rt, pod) = busybox_pod(&daemon, "tokens").await;
    let id = container(
        &mut rt,
        &pod,
        "sleeper",
        BUSYBOX,
        &["sleep", "3600"],
        |_| {},
    )
    .await;

    let code = |r: Result<tonic::Response<cri::ExecResponse>, tonic::Status>| r.unwrap_err().code();
    assert_eq!(
        code(
            rt.exec(exec_request("nosuchcontainer", &["true"], false, false))
                .await
        ),
        tonic::Code::NotFound
    );
    assert_eq!(
        code(rt.exec(exec_request(&id, &[], false, false)).await),
        tonic::Code::InvalidArgument
    );
    let mut tty_and_stderr = exec_request(&id, &["true"], false, true);
    tty_and_stderr.stderr = true;
    assert_eq!(
        code(rt.exec(tty_and_stderr).await),
        tonic::Code::InvalidArgument
    );
    let err = rt
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: "nosuchpod".into(),
            port: vec![80],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // The URL is on loopback; once used, it is gone; a made-up token is unknown.
    let url = exec_url(&mut rt, exec_request(&id, &["true"], false, false)).await;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let outcome = spdy_session(&url, None, false, None).await;
    assert_eq!(outcome.exit_code(), 0);
    let reused = spdy_upgrade(&url, &["v4.channel.k8s.io"])
        .await
        .unwrap_err();
    assert!(reused.starts_with("HTTP/1.1 404"), "{reused}");
    let (base, _) = url.rsplit_once('/').unwrap();
    let unknown = spdy_upgrade(
        &format!("{base}/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        &[],
    )
    .await
    .unwrap_err();
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");
    // An exec URL is not an attach URL.
    let url = exec_url(&mut rt, exec_request(&id, &["true"], false, false)).await;
    let wrong = spdy_upgrade(
        &url.replacen("/exec/", "/attach/", 1),
        &["v4.channel.k8s.io"],
    )
    .await
    .unwrap_err();
    assert!(wrong.starts_with("HTTP/1.1 404"), "{wrong}");
    // No common protocol: refused, with what the server speaks.
    let url = exec_url(&mut rt, exec_request(&id, &["true"], false, false)).await;
    let refused = spdy_upgrade(&url, &["v9.channel.k8s.io"])
        .await
        .unwrap_err();
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");

    // A malformed frame ends that connection with a GOAWAY, and nothing else.
    let url = exec_url(&mut rt, exec_request(&id, &["sleep", "30"], false, false)).await;
    let (mut tcp, _) = spdy_upgrade(&url, &["v4.channel.k8s.io"]).await.unwrap();
    // A control frame of SPDY version 9: not a frame berth can read.
    tcp.write_all(&[0x80, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1])
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
        .await
        .expect("the connection was closed")
        .unwrap();
    let goaway = answer.windows(4).any(|w| w == [0x80, 0x03, 0x00, 0x07]);
    assert!(goaway, "a GOAWAY came before the close: {answer:02x?}");
    let url = exec_url(
        &mut rt,
        exec_request(&id, &["echo", "still here"], false, false),
    )
    .await;
    assert_eq!(
        spdy_session(&url, None, false, None).await.stdout,
        b"still here\n"
    );

    // A stopped container: FailedPrecondition.
    rt.stop_container(cri::StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    assert_eq!(
        code(rt.exec(exec_request(&id, &["true"], false, false)).await),
        tonic::Code::FailedPrecondition
    );

    stop_pod(&mut rt, &pod.id).await;
    remove_pod(&mut rt, &pod.id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tty_container_gets_a_terminal_of_its_own_and_attach_resizes_it() {
    let daemon = TestDaemon::start().await;
    let (mut rt, pod) = busybox_pod(&daemon, "tty").await;
    let id = container(
        &mut rt,
        &pod,
        "term",
        BUSYBOX,
        &[
            "sh",
            "-c",
            "tty; stty size; while read line; do stty size; done",
        ],
        |c| {
            c.tty = true;
            c.stdin = true;
        },
    )
    .await;
    // The log has what the terminal printed: its name in the container's /dev/pts and the
    // size a new terminal gets.
    let log = std::path::Path::new(&pod.config.log_directory).join("term.log");
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("24 80") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(text.contains(" stdout F /dev/pts/0"), "{text}");
    assert!(text.contains(" stdout F 24 80"), "{text}");

    // Attach with a terminal: a resize reaches the pty, the next line shows it.
    let url = rt
        .attach(cri::AttachRequest {
            container_id: id.clone(),
            stdin: true,
            tty: true,
            stdout: true,
            stderr: false,
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let mut ws = ws_connect(&url, "v5.channel.k8s.io").await;
    let mut resize = vec![4u8];
    resize.extend_from_slice(br#"{"Width":132,"Height":43}"#);
    ws.send(Message::Binary(resize.into())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    ws.send(Message::Binary(b"\x00again\r".to_vec().into()))
        .await
        .unwrap();
    let mut seen = Vec::new();
    while let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await
    {
        if let Message::Binary(data) = message
            && data.first() == Some(&1)
        {
            seen.extend_from_slice(&data[1..]);
        }
        if String::from_utf8_lossy(&seen).contains("43 132") {
            break;
        }
    }
    assert!(
        String::from_utf8_lossy(&seen).contains("43 132"),
        "{:?}",
        String::from_utf8_lossy(&seen)
    );

    stop_pod(&mut rt, &pod.id).await;
    remove_pod(&mut rt, &pod.id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_stream_is_closed_after_the_idle_timeout() {
    let daemon = TestDaemon::start_with(true, &["--stream-idle-timeout", "1s"]).await;
    let (mut rt, pod) = busybox_pod(&daemon, "idle").await;
    let id = container(
        &mut rt,
        &pod,
        "sleeper",
        BUSYBOX,
        &["sleep", "3600"],
        |_| {},
    )
    .await;
    // A command that prints nothing for a minute: the connection goes quiet.
    let url = exec_url(&mut rt, exec_request(&id, &["sleep", "60"], false, false)).await;
    let started = std::time::Instant::now();
    let outcome = ws_session(ws_connect(&url, "v5.channel.k8s.io").await, None, None).await;
    let elapsed = started.elapsed();
    assert!(outcome.stdout.is_empty());
    assert!(
        elapsed < Duration::from_secs(30),
        "closed by the 1 s idle timeout, not by the command's end: {elapsed:?}"
    );
    stop_pod(&mut rt, &pod.id).await;
    remove_pod(&mut rt, &pod.id).await;
}
