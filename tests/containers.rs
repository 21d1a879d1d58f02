//! Containers through the real daemon: busybox from the local registry (hack/test-images.sh)
//! in real pods, driven as the kubelet drives them.
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth::cri::api as cri;
use berth::cri::api::runtime_service_client::RuntimeServiceClient;
use common::*;
use tonic::transport::Channel;

const IMAGE: &str = "docker.io/library/busybox:latest";

fn container_config(name: &str, command: &[&str]) -> cri::ContainerConfig {
    common::container_config(name, IMAGE, command)
}

/// FOO=bar, working dir /tmp, uid 1000 and gid 1001: what the env tests check.
fn as_user_1000_in_tmp_with_foo(config: &mut cri::ContainerConfig) {
    config.envs = vec![cri::KeyValue {
        key: "FOO".into(),
        value: "bar".into(),
    }];
    config.working_dir = "/tmp".into();
    config.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            run_as_user: Some(cri::Int64Value { value: 1000 }),
            run_as_group: Some(cri::Int64Value { value: 1001 }),
            ..Default::default()
        }),
        ..Default::default()
    });
}

async fn create(
    rt: &mut RuntimeServiceClient<Channel>,
    pod: &Pod,
    config: cri::ContainerConfig,
) -> Result<String, tonic::Status> {
    create_container(rt, &pod.id, &pod.config, config).await
}

async fn start(rt: &mut RuntimeServiceClient<Channel>, id: &str) -> Result<(), tonic::Status> {
    start_container(rt, id).await
}

async fn run(
    rt: &mut RuntimeServiceClient<Channel>,
    pod: &Pod,
    config: cri::ContainerConfig,
) -> String {
    let id = create(rt, pod, config).await.expect("create");
    start(rt, &id).await.expect("start");
    id
}

fn log_lines(pod: &Pod, name: &str) -> Vec<(String, String, String)> {
    std::fs::read_to_string(pod.logs.join(format!("{name}.log")))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut parts = l.splitn(4, ' ');
            let ts = parts.next().unwrap_or_default();
            assert!(
                ts.ends_with('Z') && ts.contains('T'),
                "timestamp {ts:?} in {l:?}"
            );
            (
                parts.next().unwrap_or_default().to_string(),
                parts.next().unwrap_or_default().to_string(),
                parts.next().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn stdout_of(pod: &Pod, name: &str) -> Vec<String> {
    log_lines(pod, name)
        .into_iter()
        .filter(|(stream, _, _)| stream == "stdout")
        .map(|(_, _, line)| line)
        .collect()
}

async fn remove_pod(daemon: &TestDaemon, rt: &mut RuntimeServiceClient<Channel>, pod: &Pod) {
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.id.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod.id.clone(),
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        daemon.leftover_processes().is_empty(),
        "processes: {:?}",
        daemon.leftover_processes()
    );
    assert!(
        daemon.leftover_mounts().is_empty(),
        "mounts: {:?}",
        daemon.leftover_mounts()
    );
    assert!(
        daemon.leftover_cgroups().is_empty(),
        "cgroups: {:?}",
        daemon.leftover_cgroups()
    );
    let containers = std::fs::read_dir(daemon.root.join("containers"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(containers, 0, "container records left");
    let bundles = std::fs::read_dir(daemon.state.join("containers"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(bundles, 0, "container bundles left");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_runs_logs_in_cri_format_and_exits_with_its_code() {
    let daemon = TestDaemon::start().await;
    let (mut rt, pod) = busybox_pod(&daemon, "basic").await;
    let id = run(
        &mut rt,
        &pod,
        container_config("basic", &["sh", "-c", "echo hello; echo oops >&2; exit 3"]),
    )
    .await;
    let st = wait_exited(&mut rt, &id).await;
    assert_eq!(st.exit_code, 3);
    assert_eq!(st.reason, "Error");
    assert!(st.started_at > 0 && st.finished_at >= st.started_at);
    assert_eq!(st.image.unwrap().image, IMAGE);
    assert!(st.image_id.starts_with("sha256:"));
    assert!(st.log_path.ends_with("basic.log"));
    let lines = log_lines(&pod, "basic");
    assert!(
        lines.contains(&("stdout".into(), "F".into(), "hello".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&("stderr".into(), "F".into(), "oops".into())),
        "{lines:?}"
    );

    let ok = run(&mut rt, &pod, container_config("ok", &["true"])).await;
    let st = wait_exited(&mut rt, &ok).await;
    assert_eq!((st.exit_code, st.reason.as_str()), (0, "Completed"));

    // List with filters.
    let list = |filter: cri::ContainerFilter| {
        let mut rt = rt.clone();
        async move {
            rt.list_containers(cri::ListContainersRequest {
                filter: Some(filter),
            })
            .await
            .unwrap()
            .into_inner()
            .containers
        }
    };
    assert_eq!(list(Default::default()).await.len(), 2);
    assert_eq!(
        list(cri::ContainerFilter {
            pod_sandbox_id: pod.id.clone(),
            label_selector: [("container".to_string(), "ok".to_string())].into(),
            ..Default::default()
        })
        .await
        .len(),
        1
    );
    assert_eq!(
        list(cri::ContainerFilter {
            state: Some(cri::ContainerStateValue {
                state: cri::ContainerState::ContainerRunning as i32
            }),
            ..Default::default()
        })
        .await
        .len(),
        0
    );
    rt.remove_container(cri::RemoveContainerRequest {
        container_id: ok.clone(),
    })
    .await
    .unwrap();
    rt.remove_container(cri::RemoveContainerRequest { container_id: ok })
        .await
        .unwrap();
    remove_pod(&daemon, &mut rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn args_env_workdir_user_and_the_pod_network() {
    let daemon = TestDaemon::start().await;
    let (mut rt, pod) = busybox_pod(&daemon, "env").await;
    let mut config = container_config(
        "env",
        &[
            "sh",
            "-c",
            "echo foo=$FOO; pwd; id -u; id -g; ip -4 addr show eth0 | grep inet; cat /etc/hostname",
        ],
    );
    as_user_1000_in_tmp_with_foo(&mut config);
    let id = run(&mut rt, &pod, config).await;
    let st = wait_exited(&mut rt, &id).await;
    let out = stdout_of(&pod, "env");
    assert_eq!(st.exit_code, 0, "{out:?}");
    let ip = pod_status(&mut rt, &pod.id, false)
        .await
        .unwrap()
        .status
        .unwrap()
        .network
        .unwrap()
        .ip;
    assert_eq!(out[0], "foo=bar");
    assert_eq!(out[1], "/tmp");
    assert_eq!(out[2], "1000");
    assert_eq!(out[3], "1001");
    assert!(
        out[4].contains(&ip),
        "container sees the pod IP {ip}: {out:?}"
    );
    assert_eq!(out[5], "env");
    let user = st.user.unwrap().linux.unwrap();
    assert_eq!((user.uid, user.gid), (1000, 1001));
    remove_pod(&daemon, &mut rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_kills_a_process_that_ignores_sigterm_and_limits_reach_the_cgroup() {
    let daemon = TestDaemon::start().await;
    let (mut rt, pod) = busybox_pod(&daemon, "stop").await;
    let mut config = container_config(
        "stubborn",
        &["sh", "-c", "trap '' TERM; while true; do sleep 1; done"],
    );
    config.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            cpu_shares: 512,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = run(&mut rt, &pod, config).await;
    let st = container_status(&mut rt, &id).await;
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);
    // The limits are in the container's cgroup files, in the layout this host runs: v1
    // memory.limit_in_bytes and cpu.shares, v2 memory.max and cpu.weight (the kubelet's
    // shares→weight conversion: 512 → 20, 256 → 10).
    let v2 = common::cgroup_v2();
    let (memory_file, cpu_file) = if v2 {
        ("memory.max", "cpu.weight")
    } else {
        ("memory.limit_in_bytes", "cpu.shares")
    };
    let cgroup = find_cgroup(&daemon, "memory", &id).expect("the container's memory cgroup");
    let cpu_cgroup = find_cgroup(&daemon, "cpu", &id).expect("the container's cpu cgroup");
    let read = |file: PathBuf| std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert_eq!(read(cgroup.join(memory_file)), (64u64 << 20).to_string());
    assert_eq!(
        read(cpu_cgroup.join(cpu_file)),
        if v2 { "20" } else { "512" }
    );
    rt.update_container_resources(cri::UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 96 << 20,
            cpu_shares: 256,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(read(cgroup.join(memory_file)), (96u64 << 20).to_string());
    assert_eq!(
        read(cpu_cgroup.join(cpu_file)),
        if v2 { "10" } else { "256" }
    );

    let started = Instant::now();
    rt.stop_container(cri::StopContainerRequest {
        container_id: id.clone(),
        timeout: 1,
    })
    .await
    .unwrap();
    let elapsed = started.elapsed();
    let st = container_status(&mut rt, &id).await;
    assert_eq!(st.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(st.exit_code, 137);
    assert!(
        elapsed >= Duration::from_millis(900),
        "stopped after {elapsed:?}"
    );
    // Stopping again and stopping an unknown id are fine.
    for container_id in [id.clone(), "f".repeat(64)] {
        rt.stop_container(cri::StopContainerRequest {
            container_id,
            timeout: 0,
        })
        .await
        .unwrap();
    }
    remove_pod(&daemon, &mut rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn resources_the_node_cannot_apply_are_refused_naming_the_field_and_leave_nothing() {
    let daemon = TestDaemon::start().await;
    let (mut rt, pod) = busybox_pod(&daemon, "cannot").await;
    let with = |resources: cri::LinuxContainerResources| {
        let mut config = container_config("cannot", &["sleep", "100"]);
        config.linux = Some(cri::LinuxContainerConfig {
            resources: Some(resources),
            ..Default::default()
        });
        config
    };
    let err = create(
        &mut rt,
        &pod,
        with(cri::LinuxContainerResources {
            cpuset_cpus: "0-4095".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::InvalidArgument,
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("resources.cpuset_cpus"),
        "{}",
        err.message()
    );
    // A controller no node mounts (v2), or unified keys at all (v1).
    let err = create(
        &mut rt,
        &pod,
        with(cri::LinuxContainerResources {
            unified: [("nosuch.max".to_string(), "1".to_string())].into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap_err();
    let expected = if common::cgroup_v2() {
        tonic::Code::InvalidArgument
    } else {
        tonic::Code::FailedPrecondition
    };
    assert_eq!(err.code(), expected, "{}", err.message());
    assert!(err.message().contains("unified"), "{}", err.message());
    // UpdateContainerResources is checked the same way and changes nothing.
    let id = run(&mut rt, &pod, container_config("live", &["sleep", "100"])).await;
    let err = rt
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(cri::LinuxContainerResources {
                cpuset_cpus: "4095".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::InvalidArgument,
        "{}",
        err.message()
    );
    let listed = rt
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(
        listed.len(),
        1,
        "only the live container exists: {listed:?}"
    );
    remove_pod(&daemon, &mut rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_cri_resource_reaches_the_cgroup_files_of_this_hosts_layout() {
    let daemon = TestDaemon::start().await;
    let (mut rt, pod) = busybox_pod(&daemon, "resources").await;
    let v2 = common::cgroup_v2();
    let resources = |quota: i64, shares: i64, memory: i64| cri::LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: quota,
        cpu_shares: shares,
        memory_limit_in_bytes: memory,
        // The kubelet's NoSwap: swap equal to the memory limit.
        memory_swap_limit_in_bytes: memory,
        cpuset_cpus: "0".into(),
        cpuset_mems: "0".into(),
        // What the kubelet sends for a pod without hugepages. This host (v1) mounts no
        // hugetlb hierarchy and reserves no hugepages, so the limit holds without one
        // (regression: CreateContainer failed here); the VM's v2 tree has the controller.
        hugepage_limits: vec![cri::HugepageLimit {
            page_size: "2MB".into(),
            limit: 0,
        }],
        unified: if v2 {
            [("memory.high".to_string(), (memory / 2).to_string())].into()
        } else {
            Default::default()
        },
        ..Default::default()
    };
    let mut config = container_config("limited", &["sleep", "1000"]);
    config.linux = Some(cri::LinuxContainerConfig {
        resources: Some(resources(50_000, 1024, 64 << 20)),
        ..Default::default()
    });
    let id = run(&mut rt, &pod, config).await;
    let file = |controller: &str, name: &str| {
        let dir = find_cgroup(&daemon, controller, &id).expect("the container's cgroup");
        std::fs::read_to_string(dir.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .trim()
            .to_string()
    };
    let expect = |quota: &str, weight: &str, shares: &str, memory: i64| {
        if v2 {
            assert_eq!(file("cpu", "cpu.max"), format!("{quota} 100000"));
            assert_eq!(file("cpu", "cpu.weight"), weight);
            assert_eq!(file("memory", "memory.max"), memory.to_string());
            assert_eq!(file("memory", "memory.swap.max"), "0");
            assert_eq!(file("memory", "memory.high"), (memory / 2).to_string());
            assert_eq!(file("hugetlb", "hugetlb.2MB.max"), "0");
        } else {
            assert_eq!(file("cpu", "cpu.cfs_quota_us"), quota);
            assert_eq!(file("cpu", "cpu.cfs_period_us"), "100000");
            assert_eq!(file("cpu", "cpu.shares"), shares);
            assert_eq!(file("memory", "memory.limit_in_bytes"), memory.to_string());
        }
        assert_eq!(file("cpuset", "cpuset.cpus"), "0");
        assert_eq!(file("cpuset", "cpuset.mems"), "0");
    };
    // 1024 shares → weight 39, 2048 → 79 (the kubelet's conversion).
    expect("50000", "39", "1024", 64 << 20);
    rt.update_container_resources(cri::UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(resources(25_000, 2048, 96 << 20)),
        ..Default::default()
    })
    .await
    .unwrap();
    expect("25000", "79", "2048", 96 << 20);
    remove_pod(&daemon, &mut rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_sees_its_own_cgroup_read_only() {
    let daemon = TestDaemon::start().await;
    let (mut rt, pod) = busybox_pod(&daemon, "cgroupns").await;
    let mut config = container_config("own", &["sleep", "1000"]);
    config.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = run(&mut rt, &pod, config).await;
    let out = |r: cri::ExecSyncResponse| {
        (
            r.exit_code,
            String::from_utf8_lossy(&r.stdout).trim().to_string(),
            String::from_utf8_lossy(&r.stderr).trim().to_string(),
        )
    };
    let (_, own, _) = out(exec_sync(&mut rt, &id, &["cat", "/proc/self/cgroup"], 30)
        .await
        .unwrap());
    if common::cgroup_v2() {
        // A private cgroup namespace rooted at the container's cgroup, and the cgroup2
        // mount showing that cgroup's own files: a tool reads its limit where it expects.
        assert_eq!(own, "0::/");
        let (code, limit, err) =
            out(
                exec_sync(&mut rt, &id, &["cat", "/sys/fs/cgroup/memory.max"], 30)
                    .await
                    .unwrap(),
            );
        assert_eq!((code, limit.as_str()), (0, "67108864"), "{err}");
    } else {
        // v1 has no such view: the container's cgroup as the host names it.
        assert!(own.contains(&id), "{own}");
        assert!(own.contains(&daemon.cgroup_parent), "{own}");
    }
    let (code, _, err) = out(exec_sync(&mut rt, &id, &["touch", "/sys/fs/cgroup/x"], 30)
        .await
        .unwrap());
    assert_ne!(code, 0, "/sys/fs/cgroup is writable");
    assert!(err.contains("Read-only"), "{err}");
    remove_pod(&daemon, &mut rt, &pod).await;
}

fn find_cgroup(daemon: &TestDaemon, controller: &str, id: &str) -> Option<PathBuf> {
    fn walk(dir: &Path, id: &str) -> Option<PathBuf> {
        for e in std::fs::read_dir(dir).ok()?.flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n == id) {
                    return Some(p);
                }
                if let Some(found) = walk(&p, id) {
                    return Some(found);
                }
            }
        }
        None
    }
    // v2: one tree holds every controller.
    let root = cgroup_roots().into_iter().find(|r| {
        common::cgroup_v2()
            || r.file_name()
                .is_some_and(|n| n.to_string_lossy().split(',').any(|c| c == controller))
    })?;
    walk(
        &root.join(daemon.cgroup_parent_dir()),
        &daemon.cgroup_name(id),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oom_kill_is_reported_as_oomkilled() {
    let daemon = TestDaemon::start().await;
    let (mut rt, pod) = busybox_pod(&daemon, "oom").await;
    let mut config = container_config(
        "oom",
        &[
            "sh",
            "-c",
            "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived",
        ],
    );
    config.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 16 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = run(&mut rt, &pod, config).await;
    let st = wait_exited(&mut rt, &id).await;
    assert_eq!(st.reason, "OOMKilled", "{st:?}");
    assert_eq!(st.exit_code, 137);
    remove_pod(&daemon, &mut rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn host_path_mounts_and_a_readonly_rootfs() {
    let daemon = TestDaemon::start().await;
    let (mut rt, pod) = busybox_pod(&daemon, "mounts").await;
    let data = daemon.dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("greeting"), "hi from the host\n").unwrap();
    let missing = daemon.dir.path().join("made-by-berth");
    let mut config = container_config(
        "mounts",
        &[
            "sh",
            "-c",
            "cat /data/greeting; touch /data/x 2>&1; touch /rw/y && echo rw-ok; touch /root-file 2>&1; echo done",
        ],
    );
    let mount = |host: &Path, container: &str, readonly: bool, propagation| cri::Mount {
        container_path: container.into(),
        host_path: host.to_string_lossy().to_string(),
        readonly,
        propagation,
        ..Default::default()
    };
    config.mounts = vec![
        mount(
            &data,
            "/data",
            true,
            cri::MountPropagation::PropagationPrivate as i32,
        ),
        mount(
            &missing,
            "/rw",
            false,
            cri::MountPropagation::PropagationHostToContainer as i32,
        ),
    ];
    config.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            readonly_rootfs: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = run(&mut rt, &pod, config).await;
    let st = wait_exited(&mut rt, &id).await;
    let out = stdout_of(&pod, "mounts");
    assert_eq!(st.exit_code, 0, "{out:?}");
    assert_eq!(out[0], "hi from the host");
    assert!(out[1].contains("Read-only file system"), "{out:?}");
    assert_eq!(out[2], "rw-ok");
    assert!(out[3].contains("Read-only file system"), "{out:?}");
    assert!(
        missing.join("y").exists(),
        "the missing host path was made and written"
    );
    assert!(!data.join("x").exists());
    let st = container_status(&mut rt, &id).await;
    assert_eq!(st.mounts.len(), 2);
    remove_pod(&daemon, &mut rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_clear_errors_and_leave_nothing() {
    let daemon = TestDaemon::start().await;
    let (mut rt, pod) = busybox_pod(&daemon, "bad").await;

    let err = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: "f".repeat(64),
            config: Some(container_config("x", &["true"])),
            sandbox_config: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{}", err.message());

    let mut config = container_config("noimage", &["true"]);
    config.image = Some(cri::ImageSpec {
        image: "docker.io/library/never-pulled:1".into(),
        ..Default::default()
    });
    let err = create(&mut rt, &pod, config).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{}", err.message());

    let err = match create(&mut rt, &pod, container_config("nosuch", &["nosuch"])).await {
        Err(e) => e,
        Ok(id) => start(&mut rt, &id).await.unwrap_err(),
    };
    assert!(
        err.message()
            .contains("exec: \"nosuch\": executable file not found in $PATH"),
        "{}",
        err.message()
    );

    let mut config = container_config("badcwd", &["true"]);
    config.working_dir = "/does/not/exist".into();
    let err = match create(&mut rt, &pod, config).await {
        Err(e) => e,
        Ok(id) => start(&mut rt, &id).await.unwrap_err(),
    };
    assert!(
        err.message().contains("/does/not/exist"),
        "{}",
        err.message()
    );

    let first = create(&mut rt, &pod, container_config("twice", &["sleep", "100"]))
        .await
        .unwrap();
    // The same request again is a kubelet's retry (issue 13): the same container back.
    let again = create(&mut rt, &pod, container_config("twice", &["sleep", "100"]))
        .await
        .unwrap();
    assert_eq!(again, first);
    // Another config under that name is AlreadyExists naming the container holding it.
    let err = create(&mut rt, &pod, container_config("twice", &["sleep", "200"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    assert!(err.message().contains(&first), "{}", err.message());

    // A pod that is not ready takes no new containers.
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.id.clone(),
    })
    .await
    .unwrap();
    let err = create(&mut rt, &pod, container_config("late", &["true"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    remove_pod(&daemon, &mut rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_survive_kill_9_of_the_daemon() {
    let mut daemon = TestDaemon::start().await;
    let (mut rt, pod) = busybox_pod(&daemon, "survive").await;
    let running = run(
        &mut rt,
        &pod,
        container_config(
            "running",
            &["sh", "-c", "while true; do echo tick; sleep 0.2; done"],
        ),
    )
    .await;
    let exited = run(
        &mut rt,
        &pod,
        container_config("exited", &["sh", "-c", "exit 7"]),
    )
    .await;
    wait_exited(&mut rt, &exited).await;
    let before = container_status(&mut rt, &running).await;
    daemon.kill9();
    // Logs keep flowing while the daemon is away.
    let lines_before = stdout_of(&pod, "running").len();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(stdout_of(&pod, "running").len() > lines_before);
    daemon.restart().await;
    let mut rt = daemon.runtime().await;
    let after = container_status(&mut rt, &running).await;
    assert_eq!(after.state, cri::ContainerState::ContainerRunning as i32);
    assert_eq!(after.started_at, before.started_at);
    let st = container_status(&mut rt, &exited).await;
    assert_eq!(st.exit_code, 7);
    rt.stop_container(cri::StopContainerRequest {
        container_id: running.clone(),
        timeout: 2,
    })
    .await
    .unwrap();
    assert_eq!(
        container_status(&mut rt, &running).await.state,
        cri::ContainerState::ContainerExited as i32
    );
    remove_pod(&daemon, &mut rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reopen_container_log_moves_output_to_a_new_file() {
    let daemon = TestDaemon::start().await;
    let (mut rt, pod) = busybox_pod(&daemon, "reopen").await;
    let id = run(
        &mut rt,
        &pod,
        container_config(
            "talker",
            &[
                "sh",
                "-c",
                "i=0; while true; do echo line$i; i=$((i+1)); sleep 0.05; done",
            ],
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = pod.logs.join("talker.log");
    let rotated = pod.logs.join("talker.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    rt.reopen_container_log(cri::ReopenContainerLogRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let old = std::fs::read_to_string(&rotated).unwrap();
    let new = std::fs::read_to_string(&log).unwrap();
    assert!(
        !old.is_empty() && !new.is_empty(),
        "old {old:?} new {new:?}"
    );
    // No line lost across the rotation: the numbers run on from one file into the other.
    let number = |l: &str| l.rsplit("line").next().and_then(|n| n.parse::<u64>().ok());
    let last_old = old.lines().filter_map(number).max().unwrap();
    let first_new = new.lines().filter_map(number).min().unwrap();
    assert_eq!(
        first_new,
        last_old + 1,
        "old ends at {last_old}, new starts at {first_new}"
    );
    // A stopped container has no log to reopen.
    rt.stop_container(cri::StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    let err = rt
        .reopen_container_log(cri::ReopenContainerLogRequest { container_id: id })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    remove_pod(&daemon, &mut rt, &pod).await;
}

async fn exec_sync(
    rt: &mut RuntimeServiceClient<Channel>,
    id: &str,
    cmd: &[&str],
    timeout: i64,
) -> Result<cri::ExecSyncResponse, tonic::Status> {
    // The kubelet accepts 16 MiB messages; tonic's default is 4 MiB.
    rt.clone()
        .max_decoding_message_size(64 << 20)
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout,
        })
        .await
        .map(|r| r.into_inner())
}

/// Host pids whose command line is exactly `args`.
fn processes_running(args: &[&str]) -> Vec<u32> {
    let mut wanted = args.join("\0").into_bytes();
    wanted.push(0);
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            (std::fs::read(e.path().join("cmdline")).ok()? == wanted).then_some(pid)
        })
        .collect()
}

/// Regression: a container's process stayed in the shim's session, led from outside its
/// PID namespace, which CRIU refuses to checkpoint ("A session leader ... is outside of its
/// pid namespace"). Like runc's, it leads its own session and process group.
#[tokio::test(flavor = "multi_thread")]
async fn a_containers_process_leads_its_own_session() {
    let daemon = TestDaemon::start().await;
    let (mut rt, pod) = busybox_pod(&daemon, "session").await;
    let id = run(
        &mut rt,
        &pod,
        container_config("session", &["sleep", "3600"]),
    )
    .await;
    // The pod shares its PID namespace: find the container's `sleep` among its processes.
    let stats = exec_sync(&mut rt, &id, &["sh", "-c", "cat /proc/[0-9]*/stat"], 10)
        .await
        .unwrap();
    let stats = String::from_utf8_lossy(&stats.stdout).into_owned();
    let stat = stats
        .lines()
        .find(|l| l.contains(" (sleep) "))
        .unwrap_or_else(|| panic!("no sleep in {stats}"));
    // pid (comm) state ppid pgrp session: a leader outside the namespace reads as 0.
    let pid = stat.split(' ').next().unwrap_or_default();
    let after_comm: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split(' ').collect())
        .unwrap_or_default();
    assert_eq!(after_comm.get(2..4), Some(&[pid, pid][..]), "{stat}");
    remove_pod(&daemon, &mut rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_sync_runs_in_the_container_and_honours_its_timeout() {
    let daemon = TestDaemon::start().await;
    let (mut rt, pod) = busybox_pod(&daemon, "exec").await;
    let mut config = container_config("exec", &["sleep", "3600"]);
    as_user_1000_in_tmp_with_foo(&mut config);
    let id = run(&mut rt, &pod, config).await;

    let hello = exec_sync(&mut rt, &id, &["echo", "hello"], 0)
        .await
        .unwrap();
    assert_eq!(hello.stdout, b"hello\n");
    assert!(hello.stderr.is_empty());
    assert_eq!(hello.exit_code, 0);

    let err = exec_sync(&mut rt, &id, &["sh", "-c", "echo err >&2; exit 3"], 10)
        .await
        .unwrap();
    assert_eq!(err.stderr, b"err\n");
    assert!(err.stdout.is_empty());
    assert_eq!(err.exit_code, 3);

    let ip = pod_status(&mut rt, &pod.id, false)
        .await
        .unwrap()
        .status
        .unwrap()
        .network
        .unwrap()
        .ip;
    let env = exec_sync(
        &mut rt,
        &id,
        &[
            "sh",
            "-c",
            "echo foo=$FOO; pwd; id -u; id -g; ip -4 addr show eth0 | grep inet",
        ],
        10,
    )
    .await
    .unwrap();
    let out = String::from_utf8_lossy(&env.stdout).to_string();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(env.exit_code, 0, "{out} {:?}", env.stderr);
    assert_eq!(lines[..4], ["foo=bar", "/tmp", "1000", "1001"], "{out}");
    assert!(lines[4].contains(&ip), "exec sees the pod IP {ip}: {out}");

    // Output past the CRI's 16 MiB message is refused, not cut (tests/contract.rs has the
    // sizes); the command still ran to its end.
    let big = exec_sync(
        &mut rt,
        &id,
        &["sh", "-c", "head -c 17825792 /dev/zero; echo done >&2"],
        30,
    )
    .await
    .unwrap_err();
    assert_eq!(big.code(), tonic::Code::ResourceExhausted, "{big:?}");
    assert!(big.message().contains("wrote 17825797 bytes"), "{big:?}");

    let missing = exec_sync(&mut rt, &id, &["nosuch"], 10).await.unwrap_err();
    assert!(
        missing
            .message()
            .contains("exec: \"nosuch\": executable file not found in $PATH"),
        "{missing:?}"
    );

    let empty = exec_sync(&mut rt, &id, &[], 10).await.unwrap_err();
    assert_eq!(empty.code(), tonic::Code::InvalidArgument, "{empty:?}");

    // A background child keeps stdout open: the call still returns at the deadline, and
    // nothing the exec started is left.
    let started = Instant::now();
    let timed_out = exec_sync(&mut rt, &id, &["sh", "-c", "sleep 67 & sleep 67"], 2)
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(
        timed_out.code(),
        tonic::Code::DeadlineExceeded,
        "{timed_out:?}"
    );
    assert!(
        // Well before the 67 s the background child holds the pipes for: berth returns at
        // the deadline instead of waiting for them (loose upper bound for loaded machines).
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(10),
        "returned after {elapsed:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        processes_running(&["sleep", "67"]).is_empty(),
        "sleeps left: {:?}",
        processes_running(&["sleep", "67"])
    );
    // The container itself still runs.
    assert_eq!(
        container_status(&mut rt, &id).await.state,
        cri::ContainerState::ContainerRunning as i32
    );
    let after = exec_sync(&mut rt, &id, &["true"], 10).await.unwrap();
    assert_eq!(after.exit_code, 0);

    let unknown = exec_sync(&mut rt, "nosuchcontainer", &["true"], 10)
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");

    rt.stop_container(cri::StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    let stopped = exec_sync(&mut rt, &id, &["true"], 10).await.unwrap_err();
    assert_eq!(
        stopped.code(),
        tonic::Code::FailedPrecondition,
        "{stopped:?}"
    );
    remove_pod(&daemon, &mut rt, &pod).await;
}

/// Bidirectional volumes share mounts both ways with the host; host-to-container ones
/// only one way (regression: the old root was made a slave through the new one).
#[tokio::test(flavor = "multi_thread")]
async fn mount_propagation_of_volumes_follows_the_cri_mode() {
    let daemon = TestDaemon::start().await;
    let (mut rt, pod) = busybox_pod(&daemon, "propagation").await;
    let mut volumes = Vec::new();
    for name in ["shared", "slave"] {
        let dir = daemon.dir.path().join(format!("vol-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        for args in [
            vec!["--bind", dir.to_str().unwrap(), dir.to_str().unwrap()],
            vec!["--make-rshared", dir.to_str().unwrap()],
        ] {
            assert!(
                std::process::Command::new("mount")
                    .args(&args)
                    .status()
                    .unwrap()
                    .success()
            );
        }
        volumes.push(dir);
    }
    let mut config = container_config("prop", &["sleep", "1000"]);
    let mount = |host: &Path, container: &str, propagation: cri::MountPropagation| cri::Mount {
        container_path: container.into(),
        host_path: host.to_string_lossy().to_string(),
        propagation: propagation as i32,
        ..Default::default()
    };
    config.mounts = vec![
        mount(
            &volumes[0],
            "/shared",
            cri::MountPropagation::PropagationBidirectional,
        ),
        mount(
            &volumes[1],
            "/slave",
            cri::MountPropagation::PropagationHostToContainer,
        ),
    ];
    config.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = run(&mut rt, &pod, config).await;

    // Container → host, through the bidirectional volume only.
    for dir in ["/shared/m", "/slave/m"] {
        let out = exec_sync(
            &mut rt,
            &id,
            &[
                "sh",
                "-c",
                &format!(
                    "mkdir -p {dir} && mount -t tmpfs none {dir} && touch {dir}/from-container"
                ),
            ],
            10,
        )
        .await
        .unwrap();
        assert_eq!(
            out.exit_code,
            0,
            "{:?}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        volumes[0].join("m/from-container").exists(),
        "bidirectional: the host sees the container's mount"
    );
    assert!(
        !volumes[1].join("m/from-container").exists(),
        "host-to-container: the host does not"
    );

    // Host → container, through both.
    let host_mount = volumes[1].join("h");
    std::fs::create_dir_all(&host_mount).unwrap();
    assert!(
        std::process::Command::new("mount")
            .args(["-t", "tmpfs", "none", host_mount.to_str().unwrap()])
            .status()
            .unwrap()
            .success()
    );
    std::fs::write(host_mount.join("from-host"), "x").unwrap();
    let out = exec_sync(&mut rt, &id, &["ls", "/slave/h"], 10)
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "from-host");

    // The test's own mounts go first, so the leak check sees only what berth made.
    for dir in volumes.iter().rev() {
        let _ = std::process::Command::new("umount")
            .args(["-R", "-l", dir.to_str().unwrap()])
            .status();
    }
    remove_pod(&daemon, &mut rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn container_stats_show_cpu_memory_and_the_writable_layer() {
    let daemon = TestDaemon::start().await;
    let (mut rt, pod) = busybox_pod(&daemon, "stats").await;
    let busy = run(
        &mut rt,
        &pod,
        container_config(
            "busy",
            &["sh", "-c", "head -c 20000000 /dev/zero > /tmp/fill; x=$(head -c 8000000 /dev/zero | tr '\\0' a); touch /tmp/ready; while true; do :; done"],
        ),
    )
    .await;
    let idle = run(&mut rt, &pod, container_config("idle", &["sleep", "1000"])).await;
    // Filling takes a while on a slow (emulated) machine: wait for it, then let it spin.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !exec_sync(&mut rt, &busy, &["test", "-f", "/tmp/ready"], 10)
        .await
        .is_ok_and(|out| out.exit_code == 0)
    {
        assert!(
            Instant::now() < deadline,
            "the busy container never got ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stats = rt
        .list_container_stats(cri::ListContainerStatsRequest {
            filter: Some(cri::ContainerStatsFilter {
                pod_sandbox_id: pod.id.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(stats.len(), 2);
    let of = |id: &str| {
        stats
            .iter()
            .find(|s| s.attributes.as_ref().unwrap().id == id)
            .unwrap()
            .clone()
    };
    let busy_stats = of(&busy);
    let cpu = busy_stats.cpu.unwrap();
    assert!(cpu.timestamp > 0);
    assert!(
        cpu.usage_core_nano_seconds.unwrap().value > 300_000_000,
        "a busy loop for over a second used CPU: {cpu:?}"
    );
    let memory = busy_stats.memory.unwrap();
    assert!(
        memory.working_set_bytes.unwrap().value > 4_000_000,
        "{memory:?}"
    );
    let layer = busy_stats.writable_layer.unwrap();
    assert!(layer.used_bytes.unwrap().value >= 20_000_000, "{layer:?}");
    let idle_cpu = of(&idle)
        .cpu
        .unwrap()
        .usage_core_nano_seconds
        .unwrap()
        .value;
    assert!(idle_cpu < cpu.usage_core_nano_seconds.unwrap().value);

    let single = rt
        .container_stats(cri::ContainerStatsRequest {
            container_id: idle.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert_eq!(single.attributes.unwrap().metadata.unwrap().name, "idle");
    let err = rt
        .container_stats(cri::ContainerStatsRequest {
            container_id: "f".repeat(64),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let none = rt
        .list_container_stats(cri::ListContainerStatsRequest {
            filter: Some(cri::ContainerStatsFilter {
                id: "f".repeat(64),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert!(none.is_empty());
    remove_pod(&daemon, &mut rt, &pod).await;
}
