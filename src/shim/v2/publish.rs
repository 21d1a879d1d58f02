//! Task events back to containerd: each event is forwarded over ttrpc to the Events
//! service at TTRPC_ADDRESS (what containerd sets for its shims), in the order they
//! happened, from one task so that a slow containerd never stalls a handler.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskStart,
};
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::shim::events::{Envelope, ForwardRequest};
use containerd_shim_protos::shim_async::EventsClient;
use containerd_shim_protos::topics;
use tokio::sync::mpsc;

/// How long one forward may take before the event is given up.
const FORWARD_TIMEOUT_NS: i64 = 5_000_000_000;

/// An event for containerd: its topic and the message, packed.
pub struct Event {
    topic: &'static str,
    event: Any,
}

fn pack(topic: &'static str, type_name: &str, message: &impl Message) -> Option<Event> {
    // containerd resolves an event by its proto name alone (no type URL prefix).
    let value = message.write_to_bytes().ok()?;
    let mut event = Any::new();
    event.type_url = type_name.to_string();
    event.value = value;
    Some(Event { topic, event })
}

/// A timestamp from nanoseconds since the epoch.
pub fn timestamp(unix_nanos: i64) -> Timestamp {
    let mut ts = Timestamp::new();
    ts.seconds = unix_nanos.div_euclid(1_000_000_000);
    ts.nanos = unix_nanos.rem_euclid(1_000_000_000) as i32;
    ts
}

pub fn now() -> Timestamp {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    timestamp(nanos)
}

pub fn task_create(id: &str, bundle: &str, pid: u32) -> Option<Event> {
    let mut m = TaskCreate::new();
    m.container_id = id.to_string();
    m.bundle = bundle.to_string();
    m.pid = pid;
    pack(
        topics::TASK_CREATE_EVENT_TOPIC,
        "containerd.events.TaskCreate",
        &m,
    )
}

pub fn task_start(id: &str, pid: u32) -> Option<Event> {
    let mut m = TaskStart::new();
    m.container_id = id.to_string();
    m.pid = pid;
    pack(
        topics::TASK_START_EVENT_TOPIC,
        "containerd.events.TaskStart",
        &m,
    )
}

pub fn task_exit(container_id: &str, id: &str, pid: u32, status: u32, at: i64) -> Option<Event> {
    let mut m = TaskExit::new();
    m.container_id = container_id.to_string();
    m.id = id.to_string();
    m.pid = pid;
    m.exit_status = status;
    m.exited_at = Some(timestamp(at)).into();
    pack(
        topics::TASK_EXIT_EVENT_TOPIC,
        "containerd.events.TaskExit",
        &m,
    )
}

pub fn task_oom(id: &str) -> Option<Event> {
    let mut m = TaskOOM::new();
    m.container_id = id.to_string();
    pack(
        topics::TASK_OOM_EVENT_TOPIC,
        "containerd.events.TaskOOM",
        &m,
    )
}

pub fn task_delete(id: &str, pid: u32, status: u32, at: i64) -> Option<Event> {
    let mut m = TaskDelete::new();
    m.container_id = id.to_string();
    m.id = id.to_string();
    m.pid = pid;
    m.exit_status = status;
    m.exited_at = Some(timestamp(at)).into();
    pack(
        topics::TASK_DELETE_EVENT_TOPIC,
        "containerd.events.TaskDelete",
        &m,
    )
}

pub fn exec_added(id: &str, exec_id: &str) -> Option<Event> {
    let mut m = TaskExecAdded::new();
    m.container_id = id.to_string();
    m.exec_id = exec_id.to_string();
    pack(
        topics::TASK_EXEC_ADDED_EVENT_TOPIC,
        "containerd.events.TaskExecAdded",
        &m,
    )
}

pub fn exec_started(id: &str, exec_id: &str, pid: u32) -> Option<Event> {
    let mut m = TaskExecStarted::new();
    m.container_id = id.to_string();
    m.exec_id = exec_id.to_string();
    m.pid = pid;
    pack(
        topics::TASK_EXEC_STARTED_EVENT_TOPIC,
        "containerd.events.TaskExecStarted",
        &m,
    )
}

/// Queues events for the forwarding task.
#[derive(Clone)]
pub struct Publisher {
    queue: mpsc::UnboundedSender<Event>,
}

impl Publisher {
    /// Starts the forwarding task to the Events service at `ttrpc_address` (none: events
    /// are dropped, as when driven directly in tests without containerd).
    pub fn spawn(ttrpc_address: Option<String>, namespace: String) -> Publisher {
        let (queue, events) = mpsc::unbounded_channel();
        tokio::spawn(forward_all(events, ttrpc_address, namespace));
        Publisher { queue }
    }

    pub fn publish(&self, event: Option<Event>) {
        if let Some(event) = event {
            let _ = self.queue.send(event);
        }
    }
}

async fn forward_all(
    mut events: mpsc::UnboundedReceiver<Event>,
    address: Option<String>,
    namespace: String,
) {
    let mut client: Option<EventsClient> = None;
    while let Some(Event { topic, event }) = events.recv().await {
        let Some(address) = address.as_deref() else {
            continue;
        };
        let mut envelope = Envelope::new();
        envelope.timestamp = Some(now()).into();
        envelope.namespace = namespace.clone();
        envelope.topic = topic.to_string();
        envelope.event = Some(event).into();
        let mut request = ForwardRequest::new();
        request.envelope = Some(envelope).into();
        // One reconnect per event: containerd may have restarted since the last one.
        for _ in 0..2 {
            if client.is_none() {
                client = connect(address).map(EventsClient::new);
            }
            let Some(events_client) = client.as_ref() else {
                break;
            };
            let mut metadata = HashMap::new();
            metadata.insert(
                "containerd-namespace-ttrpc".to_string(),
                vec![namespace.clone()],
            );
            let mut ctx = ttrpc_context(metadata);
            ctx.timeout_nano = FORWARD_TIMEOUT_NS;
            match events_client.forward(ctx, &request).await {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(topic, error = %e, "forward event to containerd");
                    client = None;
                }
            }
        }
    }
}

fn ttrpc_context(
    metadata: HashMap<String, Vec<String>>,
) -> containerd_shim_protos::ttrpc::context::Context {
    containerd_shim_protos::ttrpc::context::with_metadata(metadata)
}

fn connect(address: &str) -> Option<containerd_shim_protos::ttrpc::asynchronous::Client> {
    let url = if address.starts_with("unix://") {
        address.to_string()
    } else {
        format!("unix://{address}")
    };
    match containerd_shim_protos::ttrpc::asynchronous::Client::connect(&url) {
        Ok(client) => Some(client),
        Err(e) => {
            tracing::warn!(address, error = %e, "connect to containerd's events service");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_split_seconds_and_nanos() {
        let ts = timestamp(1_700_000_000_123_456_789);
        assert_eq!(ts.seconds, 1_700_000_000);
        assert_eq!(ts.nanos, 123_456_789);
    }

    #[test]
    fn events_carry_containerd_type_names_and_topics() {
        let exit = task_exit("c", "e", 7, 137, 5).unwrap();
        assert_eq!(exit.topic, "/tasks/exit");
        assert_eq!(exit.event.type_url, "containerd.events.TaskExit");
        let decoded = TaskExit::parse_from_bytes(&exit.event.value).unwrap();
        assert_eq!(
            (decoded.container_id.as_str(), decoded.id.as_str()),
            ("c", "e")
        );
        assert_eq!((decoded.pid, decoded.exit_status), (7, 137));
        assert_eq!(
            task_oom("c").unwrap().event.type_url,
            "containerd.events.TaskOOM"
        );
    }
}
