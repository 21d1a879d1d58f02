//! containerd's Task service (`containerd.task.v2.Task`) over the pod shim's process
//! table: a task is a process of `Shared` created from containerd's bundle by `berth
//! init`; its execs live in `exec`. Each call maps its error to a ttrpc code in `status`.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use containerd_shim_protos::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest, PidsRequest,
    PidsResponse, ProcessInfo, ResizePtyRequest, ShutdownRequest, StartRequest, StartResponse,
    StateRequest, StateResponse, StatsRequest, StatsResponse, Status as TaskStatus,
    UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim_protos::shim_async::Task;
use containerd_shim_protos::ttrpc::{self, r#async::TtrpcContext};
use nix::sys::signal::Signal;

use super::bundle;
use super::exec::{self, Exec, ExitFollower};
use super::fifo::{self, StdinCloser, StdioPaths};
use super::publish::{self, Publisher};
use super::status::{TtrpcResult, invalid, not_found, status, unimplemented};
use crate::shim::error::ApiError;
use crate::shim::idle::Activity;
use crate::shim::process::{StdioSource, read_cgroups_path};
use crate::shim::shared::Shared;
use crate::shim_api::ProcessStatus;

/// How long Delete waits for a never-started task's processes to die with its cgroup.
const CGROUP_KILL_WAIT: Duration = Duration::from_secs(2);

/// A task containerd created.
struct TaskEntry {
    bundle: PathBuf,
    stdio: StdioPaths,
    /// Rootfs mounts were made at `<bundle>/rootfs` and are undone on Delete.
    mounted: bool,
    console: Option<OwnedFd>,
    stdin: StdinCloser,
    execs: HashMap<String, Exec>,
}

pub struct TaskService {
    shared: Arc<Shared>,
    publisher: Publisher,
    /// Touched by every request, so the shim gives back the code pages once quiet.
    activity: Arc<Activity>,
    tasks: Mutex<HashMap<String, TaskEntry>>,
}

impl TaskService {
    pub fn new(shared: Arc<Shared>, publisher: Publisher) -> TaskService {
        TaskService {
            shared,
            publisher,
            activity: Activity::spawn_trimmer(),
            tasks: Mutex::default(),
        }
    }

    fn tasks(&self) -> MutexGuard<'_, HashMap<String, TaskEntry>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether any task is left (Shutdown exits only once none is).
    pub fn is_empty(&self) -> bool {
        self.tasks().is_empty()
    }

    /// Forwards every container exit to containerd as TaskOOM (if so) and TaskExit.
    pub fn forward_exits(&self) {
        let mut exits = self.shared.subscribe_exits();
        let publisher = self.publisher.clone();
        let activity = self.activity.clone();
        tokio::spawn(async move {
            loop {
                let exit = match exits.recv().await {
                    Ok(exit) => exit,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                activity.touch();
                if exit.oom_killed {
                    publisher.publish(publish::task_oom(&exit.id));
                }
                publisher.publish(publish::task_exit(
                    &exit.id,
                    &exit.id,
                    exit.pid,
                    exit.exit_code as u32,
                    exit.exited_at,
                ));
            }
        });
    }

    async fn create_task(&self, request: CreateTaskRequest) -> Result<u32, ttrpc::Error> {
        let id = request.id.as_str();
        let bundle_dir = PathBuf::from(&request.bundle);
        if self.tasks().contains_key(id) {
            return Err(status(ApiError::AlreadyExists(id.to_string())));
        }
        let config_path = bundle_dir.join("config.json");
        let text = std::fs::read(&config_path)
            .map_err(|e| invalid(format!("read {}: {e}", config_path.display())))?;
        let mut config: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| invalid(format!("parse {}: {e}", config_path.display())))?;
        bundle::check_spec(&config).map_err(invalid)?;
        if bundle::add_default_devices(&mut config) {
            let text = serde_json::to_vec(&config)
                .map_err(|e| status(ApiError::Internal(format!("encode config.json: {e}"))))?;
            crate::persist::write_replace(&config_path, &text).map_err(|e| {
                status(ApiError::Io {
                    what: format!("write {}", config_path.display()),
                    source: e,
                })
            })?;
        }
        if !request.checkpoint.is_empty() {
            return Err(unimplemented("restoring a checkpoint"));
        }
        let stdio_paths = StdioPaths {
            stdin: request.stdin.clone(),
            stdout: request.stdout.clone(),
            stderr: request.stderr.clone(),
            terminal: request.terminal,
        };
        let mounted = !request.rootfs.is_empty();
        if mounted {
            bundle::mount_rootfs(&bundle_dir, &request.rootfs)
                .map_err(|e| status(ApiError::FailedPrecondition(e)))?;
        }
        let undo_mounts = |err: ttrpc::Error| {
            if mounted && let Err(e) = bundle::unmount_rootfs(&bundle_dir) {
                tracing::warn!(id = %id, error = %e, "undo rootfs mounts");
            }
            err
        };
        let (child, stdin) = fifo::child_stdio(&stdio_paths).map_err(|e| {
            undo_mounts(status(ApiError::Io {
                what: "open stdio".into(),
                source: e,
            }))
        })?;
        let created = self
            .shared
            .create_from_bundle(
                id,
                &bundle_dir,
                read_cgroups_path(&bundle_dir),
                StdioSource::Given {
                    stdio: child,
                    terminal: request.terminal,
                },
            )
            .await
            .map_err(|e| undo_mounts(status(e)))?;
        let (console, stdin) = match created.console {
            Some(master) => match fifo::copy_console(master, &stdio_paths) {
                Ok((master, stdin)) => (Some(master), stdin),
                Err(e) => {
                    let _ = self.shared.kill_process(id, Signal::SIGKILL as u32, false);
                    return Err(undo_mounts(status(ApiError::Io {
                        what: "copy the terminal".into(),
                        source: e,
                    })));
                }
            },
            None => (None, stdin),
        };
        self.tasks().insert(
            id.to_string(),
            TaskEntry {
                bundle: bundle_dir,
                stdio: stdio_paths,
                mounted,
                console,
                stdin,
                execs: HashMap::new(),
            },
        );
        let pid = created.pid.max(0) as u32;
        self.publisher
            .publish(publish::task_create(id, &request.bundle, pid));
        Ok(pid)
    }

    async fn start_exec(&self, id: &str, exec_id: &str) -> Result<u32, ttrpc::Error> {
        let (process, stdio_paths) = self.with_exec(id, exec_id, |exec| exec.to_start(exec_id))?;
        let started = exec::start(&self.shared, id, exec_id, process, &stdio_paths).await?;
        let pid = started.pid;
        let follow = ExitFollower {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            publisher: self.publisher.clone(),
            activity: self.activity.clone(),
        };
        self.with_exec(id, exec_id, |exec| {
            exec.record_start(started, follow);
            Ok(())
        })?;
        self.publisher
            .publish(publish::exec_started(id, exec_id, pid as u32));
        Ok(pid as u32)
    }

    /// Runs `f` on exec `exec_id` of task `id` under the table's lock.
    fn with_exec<T>(
        &self,
        id: &str,
        exec_id: &str,
        f: impl FnOnce(&mut Exec) -> Result<T, ttrpc::Error>,
    ) -> Result<T, ttrpc::Error> {
        let mut tasks = self.tasks();
        let exec = tasks
            .get_mut(id)
            .and_then(|t| t.execs.get_mut(exec_id))
            .ok_or_else(|| not_found(&format!("{id}/{exec_id}")))?;
        f(exec)
    }

    /// The task's cgroup: every process in it (and below) killed, the cgroup removed.
    fn remove_cgroup(&self, bundle_dir: &Path) {
        let (Some(cgroups), Some(path)) =
            (self.shared.cgroups.as_ref(), read_cgroups_path(bundle_dir))
        else {
            return;
        };
        if let Err(e) = cgroups.destroy(&path, CGROUP_KILL_WAIT) {
            tracing::warn!(cgroup = %path, error = %e, "remove the task's cgroup");
        }
    }

    /// The exit of container `id` (status, exited_at), once it is final.
    fn container_exit(&self, id: &str) -> Result<Option<(u32, i64, u32)>, ttrpc::Error> {
        let state = self.shared.process_state(id).map_err(status)?;
        Ok((state.status == ProcessStatus::Exited as i32).then_some((
            state.exit_code as u32,
            state.exited_at,
            state.pid,
        )))
    }
}

/// An error with its sources, `a: b: c`.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

fn exec_id_of(exec_id: &str) -> Option<&str> {
    Some(exec_id).filter(|e| !e.is_empty())
}

#[async_trait]
impl Task for TaskService {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        request: CreateTaskRequest,
    ) -> TtrpcResult<CreateTaskResponse> {
        self.activity.touch();
        let pid = self.create_task(request).await?;
        let mut response = CreateTaskResponse::new();
        response.pid = pid;
        Ok(response)
    }

    async fn start(
        &self,
        _ctx: &TtrpcContext,
        request: StartRequest,
    ) -> TtrpcResult<StartResponse> {
        self.activity.touch();
        let pid = match exec_id_of(&request.exec_id) {
            Some(exec_id) => self.start_exec(&request.id, exec_id).await?,
            None => {
                if !self.tasks().contains_key(&request.id) {
                    return Err(not_found(&request.id));
                }
                let pid = self
                    .shared
                    .start_process(&request.id)
                    .await
                    .map_err(status)?;
                self.publisher
                    .publish(publish::task_start(&request.id, pid.max(0) as u32));
                pid.max(0) as u32
            }
        };
        let mut response = StartResponse::new();
        response.pid = pid;
        Ok(response)
    }

    async fn state(
        &self,
        _ctx: &TtrpcContext,
        request: StateRequest,
    ) -> TtrpcResult<StateResponse> {
        self.activity.touch();
        let mut response = StateResponse::new();
        response.id = request.id.clone();
        let tasks = self.tasks();
        let task = tasks
            .get(&request.id)
            .ok_or_else(|| not_found(&request.id))?;
        response.bundle = task.bundle.to_string_lossy().into_owned();
        if let Some(exec_id) = exec_id_of(&request.exec_id) {
            task.execs
                .get(exec_id)
                .ok_or_else(|| not_found(&format!("{}/{exec_id}", request.id)))?
                .fill_state(exec_id, &mut response);
            return Ok(response);
        }
        task.stdio.fill_state(&mut response);
        drop(tasks);
        let state = self.shared.process_state(&request.id).map_err(status)?;
        response.pid = state.pid;
        let task_status = match ProcessStatus::try_from(state.status) {
            Ok(ProcessStatus::Created) => TaskStatus::CREATED,
            Ok(ProcessStatus::Running) => TaskStatus::RUNNING,
            Ok(ProcessStatus::Exited) => {
                response.exit_status = state.exit_code as u32;
                response.exited_at = Some(publish::timestamp(state.exited_at)).into();
                TaskStatus::STOPPED
            }
            _ => TaskStatus::UNKNOWN,
        };
        response.status = task_status.into();
        Ok(response)
    }

    async fn kill(&self, _ctx: &TtrpcContext, request: KillRequest) -> TtrpcResult<Empty> {
        self.activity.touch();
        if let Some(exec_id) = exec_id_of(&request.exec_id) {
            self.with_exec(&request.id, exec_id, |exec| exec.signal(request.signal))?;
            return Ok(Empty::new());
        }
        if !self.tasks().contains_key(&request.id) {
            return Err(not_found(&request.id));
        }
        self.shared
            .kill_process(&request.id, request.signal, request.all)
            .map_err(status)?;
        Ok(Empty::new())
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        request: DeleteRequest,
    ) -> TtrpcResult<DeleteResponse> {
        self.activity.touch();
        if let Some(exec_id) = exec_id_of(&request.exec_id) {
            let mut tasks = self.tasks();
            let task = tasks
                .get_mut(&request.id)
                .ok_or_else(|| not_found(&request.id))?;
            let response = task
                .execs
                .get(exec_id)
                .ok_or_else(|| not_found(&format!("{}/{exec_id}", request.id)))?
                .delete_response(exec_id)?;
            task.execs.remove(exec_id);
            return Ok(response);
        }
        let mut response = DeleteResponse::new();
        let bundle_dir = {
            let tasks = self.tasks();
            let task = tasks
                .get(&request.id)
                .ok_or_else(|| not_found(&request.id))?;
            task.bundle.clone()
        };
        let exit = self.container_exit(&request.id)?;
        let state = self.shared.process_state(&request.id).map_err(status)?;
        self.shared.delete_process(&request.id).map_err(status)?;
        let Some(task) = self.tasks().remove(&request.id) else {
            return Err(not_found(&request.id));
        };
        self.remove_cgroup(&bundle_dir);
        if task.mounted
            && let Err(e) = bundle::unmount_rootfs(&bundle_dir)
        {
            tracing::warn!(id = %request.id, error = %e, "unmount rootfs");
        }
        let (code, at) = match exit {
            Some((code, at, _)) => (code, at),
            // Never started: it was killed just now.
            None => (
                128 + Signal::SIGKILL as u32,
                crate::linux::process::now_unix_nanos(),
            ),
        };
        response.pid = state.pid;
        response.exit_status = code;
        response.exited_at = Some(publish::timestamp(at)).into();
        self.publisher
            .publish(publish::task_delete(&request.id, state.pid, code, at));
        Ok(response)
    }

    async fn wait(&self, _ctx: &TtrpcContext, request: WaitRequest) -> TtrpcResult<WaitResponse> {
        self.activity.touch();
        let mut response = WaitResponse::new();
        if let Some(exec_id) = exec_id_of(&request.exec_id) {
            let mut exit =
                self.with_exec(&request.id, exec_id, |exec| Ok(exec.subscribe_exit()))?;
            let done = exit
                .wait_for(Option::is_some)
                .await
                .map_err(|_| not_found(&format!("{}/{exec_id}", request.id)))?;
            if let Some((code, at)) = *done {
                response.exit_status = code;
                response.exited_at = Some(publish::timestamp(at)).into();
            }
            return Ok(response);
        }
        loop {
            // Subscribed before looking, so an exit between the two is not missed.
            let mut exits = self.shared.subscribe_exits();
            if let Some((code, at, _)) = self.container_exit(&request.id)? {
                response.exit_status = code;
                response.exited_at = Some(publish::timestamp(at)).into();
                return Ok(response);
            }
            loop {
                match exits.recv().await {
                    Ok(exit) if exit.id == request.id => break,
                    Ok(_) => continue,
                    Err(_) => break,
                }
            }
        }
    }

    async fn exec(&self, _ctx: &TtrpcContext, request: ExecProcessRequest) -> TtrpcResult<Empty> {
        self.activity.touch();
        let process: serde_json::Value = serde_json::from_slice(&request.spec.value)
            .map_err(|e| invalid(format!("exec {}: process spec: {e}", request.exec_id)))?;
        if request.exec_id.is_empty() || request.exec_id.contains('/') {
            return Err(invalid(format!("invalid exec id {:?}", request.exec_id)));
        }
        {
            let mut tasks = self.tasks();
            let task = tasks
                .get_mut(&request.id)
                .ok_or_else(|| not_found(&request.id))?;
            if task.execs.contains_key(&request.exec_id) {
                return Err(status(ApiError::AlreadyExists(format!(
                    "{}/{}",
                    request.id, request.exec_id
                ))));
            }
            let stdio = StdioPaths {
                stdin: request.stdin.clone(),
                stdout: request.stdout.clone(),
                stderr: request.stderr.clone(),
                terminal: request.terminal,
            };
            task.execs
                .insert(request.exec_id.clone(), Exec::new(process, stdio));
        }
        self.publisher
            .publish(publish::exec_added(&request.id, &request.exec_id));
        Ok(Empty::new())
    }

    async fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        request: ResizePtyRequest,
    ) -> TtrpcResult<Empty> {
        self.activity.touch();
        let tasks = self.tasks();
        let task = tasks
            .get(&request.id)
            .ok_or_else(|| not_found(&request.id))?;
        let console = match exec_id_of(&request.exec_id) {
            Some(exec_id) => task.execs.get(exec_id).and_then(Exec::console),
            None => task.console.as_ref(),
        };
        let console = console.ok_or_else(|| {
            status(ApiError::FailedPrecondition(format!(
                "{} has no terminal",
                request.id
            )))
        })?;
        fifo::resize(console, request.width, request.height).map_err(|e| {
            status(ApiError::Io {
                what: "resize the terminal".into(),
                source: e,
            })
        })?;
        Ok(Empty::new())
    }

    async fn close_io(&self, _ctx: &TtrpcContext, request: CloseIORequest) -> TtrpcResult<Empty> {
        self.activity.touch();
        // containerd keeps its end of the stdin FIFO (another attach may come): the
        // process's stdin ends here, whatever containerd does with the FIFO.
        let mut tasks = self.tasks();
        let task = tasks
            .get_mut(&request.id)
            .ok_or_else(|| not_found(&request.id))?;
        match exec_id_of(&request.exec_id) {
            Some(exec_id) => {
                let exec = task
                    .execs
                    .get_mut(exec_id)
                    .ok_or_else(|| not_found(&format!("{}/{exec_id}", request.id)))?;
                if request.stdin {
                    exec.close_stdin();
                }
            }
            None if request.stdin => task.stdin.close(),
            None => {}
        }
        Ok(Empty::new())
    }

    async fn pids(&self, _ctx: &TtrpcContext, request: PidsRequest) -> TtrpcResult<PidsResponse> {
        self.activity.touch();
        let bundle_dir = self
            .tasks()
            .get(&request.id)
            .map(|t| t.bundle.clone())
            .ok_or_else(|| not_found(&request.id))?;
        let state = self.shared.process_state(&request.id).map_err(status)?;
        let mut pids: Vec<i32> =
            match (self.shared.cgroups.as_ref(), read_cgroups_path(&bundle_dir)) {
                (Some(cgroups), Some(path)) => cgroups.procs(&path).unwrap_or_default(),
                _ => Vec::new(),
            };
        if pids.is_empty() && state.pid > 0 {
            pids.push(state.pid as i32);
        }
        let mut response = PidsResponse::new();
        response.processes = pids
            .into_iter()
            .map(|pid| {
                let mut info = ProcessInfo::new();
                info.pid = pid.max(0) as u32;
                info
            })
            .collect();
        Ok(response)
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        request: ConnectRequest,
    ) -> TtrpcResult<ConnectResponse> {
        self.activity.touch();
        let mut response = ConnectResponse::new();
        response.shim_pid = std::process::id();
        response.task_pid = self
            .shared
            .process_state(&request.id)
            .map_or(0, |state| state.pid);
        response.version = env!("CARGO_PKG_VERSION").to_string();
        Ok(response)
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, _request: ShutdownRequest) -> TtrpcResult<Empty> {
        self.activity.touch();
        // One shim serves the pod's tasks: it goes once the last is deleted.
        if self.is_empty() {
            self.shared.shutdown.notify_one();
        }
        Ok(Empty::new())
    }

    async fn stats(
        &self,
        _ctx: &TtrpcContext,
        request: StatsRequest,
    ) -> TtrpcResult<StatsResponse> {
        self.activity.touch();
        let bundle_dir = self
            .tasks()
            .get(&request.id)
            .map(|t| t.bundle.clone())
            .ok_or_else(|| not_found(&request.id))?;
        let (Some(cgroups), Some(path)) =
            (self.shared.cgroups.as_ref(), read_cgroups_path(&bundle_dir))
        else {
            return Err(status(ApiError::FailedPrecondition(format!(
                "task {} has no cgroup",
                request.id
            ))));
        };
        let usage = crate::container::usage::read_usage(cgroups, &path);
        let any = super::stats::metrics_any(&usage)
            .map_err(ApiError::Internal)
            .map_err(status)?;
        let mut response = StatsResponse::new();
        response.stats = Some(any).into();
        Ok(response)
    }

    async fn update(&self, _ctx: &TtrpcContext, request: UpdateTaskRequest) -> TtrpcResult<Empty> {
        self.activity.touch();
        let bundle_dir = self
            .tasks()
            .get(&request.id)
            .map(|t| t.bundle.clone())
            .ok_or_else(|| not_found(&request.id))?;
        let resources = super::stats::resources(&request.resources).map_err(invalid)?;
        let (Some(cgroups), Some(path)) =
            (self.shared.cgroups.as_ref(), read_cgroups_path(&bundle_dir))
        else {
            return Err(status(ApiError::FailedPrecondition(format!(
                "task {} has no cgroup",
                request.id
            ))));
        };
        cgroups.apply_resources(&path, &resources).map_err(|e| {
            status(ApiError::FailedPrecondition(format!(
                "update {}: {}",
                request.id,
                error_chain(&e)
            )))
        })?;
        tracing::info!(id = %request.id, "resources updated");
        Ok(Empty::new())
    }

    async fn pause(
        &self,
        _ctx: &TtrpcContext,
        _request: containerd_shim_protos::api::PauseRequest,
    ) -> TtrpcResult<Empty> {
        self.activity.touch();
        Err(unimplemented("Pause"))
    }

    async fn resume(
        &self,
        _ctx: &TtrpcContext,
        _request: containerd_shim_protos::api::ResumeRequest,
    ) -> TtrpcResult<Empty> {
        self.activity.touch();
        Err(unimplemented("Resume"))
    }

    async fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        _request: containerd_shim_protos::api::CheckpointTaskRequest,
    ) -> TtrpcResult<Empty> {
        self.activity.touch();
        Err(unimplemented("Checkpoint"))
    }
}
