//! The CNI invoker against Debian's real plugins (bridge, host-local, portmap, loopback) in
//! network namespaces pinned by berth. Needs root, the plugins in /usr/lib/cni, iptables,
//! nsenter, ip and busybox; fails with the reason when one is missing. Everything it creates (its
//! own bridges, netns, veths, leases, iptables rules) is removed, and checked to be gone.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth::cni::{Attachment, CniError, CniManager, NetworkConfigList, PortMapping, Protocol};
use berth::linux::netns::{is_pinned, pin_netns, unpin_netns};
use serde_json::json;

const CNI_BIN: &str = "/usr/lib/cni";

fn require_environment() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "cni_bridge tests need root to create netns, bridges and iptables rules"
    );
    for plugin in ["bridge", "host-local", "portmap", "loopback"] {
        assert!(
            Path::new(CNI_BIN).join(plugin).is_file(),
            "CNI plugin {plugin} missing in {CNI_BIN} (install containernetworking-plugins)"
        );
    }
    for tool in ["nsenter", "ip", "iptables-save", "busybox"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(found, "{tool} is needed by this test and is not installed");
    }
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn in_netns(netns: &Path, args: &[&str]) -> String {
    let mut full = vec![format!("--net={}", netns.display())];
    full.extend(args.iter().map(|s| s.to_string()));
    let out = Command::new("nsenter").args(&full).output().unwrap();
    assert!(
        out.status.success(),
        "nsenter {full:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Interface names in a netns (`ip -o link` lines: "2: eth0@if5: <FLAGS> ...").
fn links(netns: &Path) -> Vec<String> {
    in_netns(netns, &["ip", "-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_owned())
        .collect()
}

fn link_flags(netns: &Path, name: &str) -> String {
    let line = in_netns(netns, &["ip", "-o", "link", "show", name]);
    line.split('<')
        .nth(1)
        .and_then(|s| s.split('>').next())
        .unwrap_or_default()
        .to_owned()
}

fn veths_on(bridge: &str) -> Vec<String> {
    run("ip", &["-o", "link", "show", "master", bridge])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect()
}

fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// IP addresses host-local holds leases for.
fn leases(ipam_dir: &Path, network: &str) -> Vec<IpAddr> {
    let Ok(entries) = std::fs::read_dir(ipam_dir.join(network)) else {
        return Vec::new();
    };
    let mut ips: Vec<IpAddr> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    ips.sort();
    ips
}

fn nat_rules_mention(id: &str) -> bool {
    run("iptables-save", &["-t", "nat"]).contains(id)
}

/// Removes what a test made, whatever happened: listener, netns pins, the netns dir's own
/// bind mount, the bridge.
struct Cleanup {
    netns_dir: PathBuf,
    pinned: Vec<PathBuf>,
    bridge: &'static str,
    listener: Option<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut child) = self.listener.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for path in &self.pinned {
            let _ = unpin_netns(path);
        }
        let _ = nix::mount::umount2(&self.netns_dir, nix::mount::MntFlags::MNT_DETACH);
        let _ = Command::new("ip")
            .args(["link", "del", self.bridge])
            .stderr(Stdio::null())
            .status();
    }
}

fn bridge_network(name: &str, bridge: &str, ipam: serde_json::Value) -> NetworkConfigList {
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false, "ipam": ipam},
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
        ]
    });
    NetworkConfigList::from_bytes(conf.to_string().as_bytes(), None).unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET / over plain HTTP/1.0, retrying until the server answers or 10 s pass.
fn http_get(addr: SocketAddr) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            conn.set_read_timeout(Some(Duration::from_secs(5)))?;
            conn.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
            let mut response = String::new();
            conn.read_to_string(&mut response)?;
            Ok(response)
        })();
        match attempt {
            Ok(response) if !response.is_empty() => return response,
            other if Instant::now() > deadline => panic!("GET {addr}: {other:?}"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

#[tokio::test]
async fn bridge_add_serves_the_pod_ip_and_host_port_then_del_leaves_nothing() {
    require_environment();
    let tmp = tempfile::tempdir().unwrap();
    let netns_dir = tmp.path().join("netns");
    let netns = netns_dir.join("pod-a");
    let mut cleanup = Cleanup {
        netns_dir: netns_dir.clone(),
        pinned: vec![netns.clone()],
        bridge: "berthtest0",
        listener: None,
    };
    let ipam_dir = tmp.path().join("ipam");
    let net = bridge_network(
        "berthtest",
        "berthtest0",
        json!({"type": "host-local", "ranges": [[{"subnet": "10.99.0.0/24"}]],
               "routes": [{"dst": "0.0.0.0/0"}], "dataDir": ipam_dir}),
    );
    // The conf dir path is unused here: add/del take the list.
    let cni = CniManager::new(tmp.path().join("net.d"), vec![CNI_BIN.into()]);

    pin_netns(&netns).unwrap();
    assert!(is_pinned(&netns));
    let container_id = format!("berthtest{}", std::process::id());
    let host_port = free_port();
    let mut att = Attachment::new(
        &container_id,
        Some(netns.clone()),
        "default",
        "pod-a",
        "uid-a",
    );
    att.port_mappings = vec![PortMapping {
        host_port,
        container_port: 8080,
        protocol: Protocol::Tcp,
        host_ip: String::new(),
    }];

    let result = cni.add(&net, &att).await.unwrap();
    let pod_ip = match result.ips.as_slice() {
        [IpAddr::V4(ip)] => *ip,
        other => panic!("expected one IPv4 address, got {other:?}"),
    };
    assert_eq!(
        pod_ip.octets()[..3],
        [10, 99, 0],
        "{pod_ip} not in 10.99.0.0/24"
    );
    assert_eq!(leases(&ipam_dir, "berthtest"), [IpAddr::V4(pod_ip)]);
    assert_eq!(veths_on("berthtest0").len(), 1, "one veth on the bridge");
    assert!(
        result
            .interfaces
            .iter()
            .any(|i| i.name == "eth0" && i.sandbox.is_some())
    );
    let mut names = links(&netns);
    names.sort();
    assert_eq!(names, ["eth0", "lo"]);
    assert!(link_flags(&netns, "lo").split(',').any(|f| f == "UP"));
    assert!(link_flags(&netns, "eth0").split(',').any(|f| f == "UP"));
    assert!(
        nat_rules_mention(&container_id),
        "portmap added no DNAT rule"
    );

    // A web server inside the pod, reached on the pod IP and through the host port.
    let www = tmp.path().join("www");
    std::fs::create_dir(&www).unwrap();
    let token = format!("hello from {container_id}");
    std::fs::write(www.join("index.html"), &token).unwrap();
    cleanup.listener = Some(
        Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .args(["busybox", "httpd", "-f", "-p"])
            .arg(format!("{pod_ip}:8080"))
            .arg("-h")
            .arg(&www)
            .spawn()
            .unwrap(),
    );
    let direct = http_get(SocketAddr::new(pod_ip.into(), 8080));
    assert!(direct.contains(&token), "via pod IP: {direct}");
    let forwarded = http_get(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), host_port));
    assert!(forwarded.contains(&token), "via host port: {forwarded}");
    if let Some(mut child) = cleanup.listener.take() {
        child.kill().unwrap();
        child.wait().unwrap();
    }

    let persisted: berth::cni::CniResult =
        serde_json::from_str(&serde_json::to_string(&result).unwrap()).unwrap();
    cni.del(&net, &att, Some(&persisted.raw)).await.unwrap();
    assert!(leases(&ipam_dir, "berthtest").is_empty(), "IP lease left");
    assert!(veths_on("berthtest0").is_empty(), "veth left");
    assert_eq!(links(&netns), ["lo"]);
    assert!(!nat_rules_mention(&container_id), "portmap rules left");
    // DEL again (the kubelet retries StopPodSandbox): still fine.
    cni.del(&net, &att, Some(&persisted.raw)).await.unwrap();

    unpin_netns(&netns).unwrap();
    assert!(!netns.exists());
    drop(cleanup);
    assert!(!link_exists("berthtest0"), "bridge left");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(netns_dir.to_str().unwrap()),
        "mount left"
    );
}

#[tokio::test]
async fn failed_adds_report_the_plugins_message_and_leave_nothing() {
    require_environment();
    let tmp = tempfile::tempdir().unwrap();
    let netns_dir = tmp.path().join("netns");
    let [ns_a, ns_b, ns_c] = ["a", "b", "c"].map(|n| netns_dir.join(n));
    let cleanup = Cleanup {
        netns_dir: netns_dir.clone(),
        pinned: vec![ns_a.clone(), ns_b.clone(), ns_c.clone()],
        bridge: "berthtest1",
        listener: None,
    };
    let ipam_dir = tmp.path().join("ipam");
    // A range of one address: the second pod cannot get one.
    let ipam = json!({"type": "host-local", "dataDir": ipam_dir, "ranges": [[{
        "subnet": "10.99.1.0/24", "rangeStart": "10.99.1.10", "rangeEnd": "10.99.1.10"}]]});
    let net = bridge_network("berthtest1", "berthtest1", ipam.clone());
    let cni = CniManager::new(tmp.path().join("net.d"), vec![CNI_BIN.into()]);
    for ns in [&ns_a, &ns_b, &ns_c] {
        pin_netns(ns).unwrap();
    }
    let pid = std::process::id();
    let att = |ns: &Path, n: &str| {
        Attachment::new(
            format!("berthtest{pid}{n}"),
            Some(ns.to_path_buf()),
            "default",
            n,
            n,
        )
    };
    let (att_a, att_b, att_c) = (att(&ns_a, "a"), att(&ns_b, "b"), att(&ns_c, "c"));

    let first = cni.add(&net, &att_a).await.unwrap();
    let exhausted = cni.add(&net, &att_b).await.unwrap_err();
    let msg = exhausted.to_string();
    assert!(
        matches!(exhausted, CniError::Plugin { .. })
            && msg.contains("no IP addresses available in range set"),
        "{msg}"
    );
    let status = tonic::Status::from(berth::Error::from(exhausted));
    assert_eq!(status.code(), tonic::Code::Internal);
    assert!(
        status.message().contains("no IP addresses available"),
        "{status:?}"
    );
    assert_eq!(links(&ns_b), ["lo"], "pod b kept an interface");
    assert_eq!(veths_on("berthtest1").len(), 1, "only pod a's veth remains");
    assert_eq!(leases(&ipam_dir, "berthtest1"), first.ips);

    // A chain whose second plugin does not exist: the bridge's work is undone.
    let mut bogus = bridge_network("berthtest1c", "berthtest1", ipam);
    bogus.plugins[1] = json!({"type": "berth-no-such-plugin"});
    cni.del(&net, &att_a, Some(&first.raw)).await.unwrap();
    let missing = cni.add(&bogus, &att_c).await.unwrap_err();
    assert_eq!(
        missing.to_string(),
        format!("CNI plugin \"berth-no-such-plugin\" not found in {CNI_BIN}")
    );
    assert_eq!(links(&ns_c), ["lo"]);
    assert!(veths_on("berthtest1").is_empty(), "veth left");
    assert!(leases(&ipam_dir, "berthtest1").is_empty());
    assert!(leases(&ipam_dir, "berthtest1c").is_empty());
    for id in [&att_a, &att_b, &att_c].map(|a| &a.container_id) {
        assert!(!nat_rules_mention(id), "nat rules left for {id}");
    }

    for ns in [&ns_a, &ns_b, &ns_c] {
        unpin_netns(ns).unwrap();
        assert!(!ns.exists());
    }
    drop(cleanup);
    assert!(!link_exists("berthtest1"), "bridge left");
}
