//! berth's client of systemd's manager API (`org.freedesktop.systemd1`) on the system
//! bus, with zbus on tokio: transient units started and stopped as jobs whose end is
//! awaited, properties changed at runtime, units listed. Every call has a deadline, so a
//! systemd that does not answer becomes a clear `Unavailable`, never a hung request.

use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt as _;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};
use zbus::{Connection, MatchRule, Message, MessageStream};

use super::properties::{Property, PropertyValue};

const SYSTEMD: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const UNIT: &str = "org.freedesktop.systemd1.Unit";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";
const NO_SUCH_UNIT: &str = "org.freedesktop.systemd1.NoSuchUnit";
const UNIT_EXISTS: &str = "org.freedesktop.systemd1.UnitExists";

/// One method call (connecting included).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// A start or stop job, from the call to its JobRemoved signal.
const JOB_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error(
        "systemd is not answering on the system D-Bus (is dbus running and PID 1 systemd?); the systemd cgroup driver needs it"
    )]
    Unavailable(#[source] zbus::Error),
    #[error("systemd did not answer {method} for {unit} within {after:?}")]
    Timeout {
        method: &'static str,
        unit: String,
        after: Duration,
    },
    #[error("systemd {method} {unit}")]
    Call {
        method: &'static str,
        unit: String,
        #[source]
        source: zbus::Error,
    },
    #[error("systemd's job for {method} {unit} ended with result {result:?}")]
    JobFailed {
        method: &'static str,
        unit: String,
        result: String,
    },
    #[error(
        "unit {unit} already exists and berth did not make it (its description is {description:?}); berth leaves it alone"
    )]
    NotOurs { unit: String, description: String },
}

impl From<SystemdError> for crate::Error {
    fn from(err: SystemdError) -> Self {
        let kind = match &err {
            SystemdError::Unavailable(_) | SystemdError::Timeout { .. } => {
                crate::ErrorKind::Unavailable
            }
            SystemdError::NotOurs { .. } => crate::ErrorKind::FailedPrecondition,
            SystemdError::Call { .. } | SystemdError::JobFailed { .. } => {
                crate::ErrorKind::Internal
            }
        };
        crate::Error::with_source(kind, "systemd cgroup driver", err)
    }
}

type Result<T, E = SystemdError> = std::result::Result<T, E>;

/// A unit as ListUnitsByPatterns reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedUnit {
    pub name: String,
    pub description: String,
    pub active_state: String,
}

/// A transient unit to start.
#[derive(Debug, Clone)]
pub struct TransientUnit<'a> {
    pub name: &'a str,
    /// Marks the unit as berth's: a unit of that name with another description is not.
    pub description: &'a str,
    /// Every other property (Slice, PIDs, Delegate, limits...).
    pub properties: Vec<Property>,
}

/// The connection to the system bus, made on first use and made again after it broke.
#[derive(Default)]
pub struct Systemd {
    connection: Mutex<Option<Connection>>,
}

fn error_name(err: &zbus::Error) -> Option<&str> {
    match err {
        zbus::Error::MethodError(name, _, _) => Some(name.as_str()),
        _ => None,
    }
}

/// Errors that mean "nobody answers" rather than "systemd said no".
fn is_unavailable(err: &zbus::Error) -> bool {
    match error_name(err) {
        Some(name) => matches!(
            name,
            "org.freedesktop.DBus.Error.ServiceUnknown"
                | "org.freedesktop.DBus.Error.NoReply"
                | "org.freedesktop.DBus.Error.TimedOut"
                | "org.freedesktop.DBus.Error.Disconnected"
                | "org.freedesktop.DBus.Error.NameHasNoOwner"
        ),
        None => matches!(
            err,
            zbus::Error::InputOutput(_) | zbus::Error::Handshake(_) | zbus::Error::Address(_)
        ),
    }
}

fn to_value(value: &PropertyValue) -> Value<'_> {
    match value {
        PropertyValue::U64(n) => Value::U64(*n),
        PropertyValue::Bool(b) => Value::Bool(*b),
        PropertyValue::Str(s) => Value::from(s.as_str()),
        PropertyValue::Bytes(b) => Value::from(b.clone()),
        PropertyValue::U32List(l) => Value::from(l.clone()),
    }
}

fn to_values(properties: &[Property]) -> Vec<(&str, Value<'_>)> {
    properties
        .iter()
        .map(|(name, value)| (*name, to_value(value)))
        .collect()
}

impl Systemd {
    pub fn new() -> Systemd {
        Systemd::default()
    }

    async fn connection(&self) -> Result<Connection> {
        if let Some(c) = self
            .connection
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Ok(c);
        }
        let connect = async {
            let c = Connection::system().await?;
            // Without a subscription systemd may not send JobRemoved to this client.
            c.call_method(Some(SYSTEMD), MANAGER_PATH, Some(MANAGER), "Subscribe", &())
                .await?;
            Ok::<_, zbus::Error>(c)
        };
        let c = match tokio::time::timeout(CALL_TIMEOUT, connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(SystemdError::Unavailable(e)),
            Err(_) => {
                return Err(SystemdError::Timeout {
                    method: "Subscribe",
                    unit: "(connecting)".into(),
                    after: CALL_TIMEOUT,
                });
            }
        };
        *self.connection.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
        Ok(c)
    }

    fn forget_connection(&self) {
        *self.connection.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    async fn call<B>(
        &self,
        path: &str,
        interface: &str,
        method: &'static str,
        unit: &str,
        body: &B,
    ) -> Result<Message>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        let connection = self.connection().await?;
        let call = connection.call_method(Some(SYSTEMD), path, Some(interface), method, body);
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) if is_unavailable(&e) => {
                self.forget_connection();
                Err(SystemdError::Unavailable(e))
            }
            Ok(Err(source)) => Err(SystemdError::Call {
                method,
                unit: unit.to_string(),
                source,
            }),
            Err(_) => {
                self.forget_connection();
                Err(SystemdError::Timeout {
                    method,
                    unit: unit.to_string(),
                    after: CALL_TIMEOUT,
                })
            }
        }
    }

    async fn manager_call<B>(&self, method: &'static str, unit: &str, body: &B) -> Result<Message>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        self.call(MANAGER_PATH, MANAGER, method, unit, body).await
    }

    /// Calls a manager method that queues a job and waits for the job's end. The
    /// JobRemoved subscription exists before the call, so a job that ends at once is not
    /// missed.
    async fn run_job<B>(&self, method: &'static str, unit: &str, body: &B) -> Result<()>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        let connection = self.connection().await?;
        let call_err = |source| SystemdError::Call {
            method,
            unit: unit.to_string(),
            source,
        };
        let rule = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .sender(SYSTEMD)
            .and_then(|b| b.interface(MANAGER))
            .and_then(|b| b.member("JobRemoved"))
            .map_err(call_err)?
            .build();
        let mut removed = MessageStream::for_match_rule(rule, &connection, Some(256))
            .await
            .map_err(SystemdError::Unavailable)?;
        let reply = self.manager_call(method, unit, body).await?;
        let job: OwnedObjectPath = reply.body().deserialize().map_err(call_err)?;
        let wait = async {
            while let Some(signal) = removed.next().await {
                let Ok(signal) = signal else { continue };
                let Ok((_id, path, _unit, result)) =
                    signal
                        .body()
                        .deserialize::<(u32, OwnedObjectPath, String, String)>()
                else {
                    continue;
                };
                if path == job {
                    return Some(result);
                }
            }
            None
        };
        match tokio::time::timeout(JOB_TIMEOUT, wait).await {
            Ok(Some(result)) if result == "done" => Ok(()),
            Ok(Some(result)) => Err(SystemdError::JobFailed {
                method,
                unit: unit.to_string(),
                result,
            }),
            Ok(None) => {
                self.forget_connection();
                Err(SystemdError::Unavailable(zbus::Error::Failure(
                    "the bus connection closed while waiting for a job".into(),
                )))
            }
            Err(_) => Err(SystemdError::Timeout {
                method,
                unit: unit.to_string(),
                after: JOB_TIMEOUT,
            }),
        }
    }

    /// StartTransientUnit, waiting for its job; false when a unit of that name exists.
    async fn start_new(&self, unit: &TransientUnit<'_>) -> Result<bool> {
        let mut properties = to_values(&unit.properties);
        properties.push(("Description", Value::from(unit.description)));
        let aux: Vec<(&str, Vec<(&str, Value<'_>)>)> = Vec::new();
        let body = (unit.name, "fail", properties, aux);
        match self.run_job("StartTransientUnit", unit.name, &body).await {
            Ok(()) => Ok(true),
            Err(SystemdError::Call { source, .. }) if error_name(&source) == Some(UNIT_EXISTS) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// StartTransientUnit, waiting for its job. A unit of that name that already exists
    /// is fine when berth made it (same description: a retried request); otherwise
    /// [`SystemdError::NotOurs`].
    pub async fn start_transient(&self, unit: &TransientUnit<'_>) -> Result<()> {
        if self.start_new(unit).await? {
            return Ok(());
        }
        let description = self.description(unit.name).await?.unwrap_or_default();
        if description == unit.description {
            Ok(())
        } else {
            Err(SystemdError::NotOurs {
                unit: unit.name.to_string(),
                description,
            })
        }
    }

    /// Starts each slice of `slice_path` (`/a.slice/a-b.slice`) that does not exist yet,
    /// from the top: the last described as `description`, its parents as
    /// `parent_description`. Slices that exist (the kubelet's, or a parent shared with
    /// other pods) are left as they are; the first `present` are known to exist and cost
    /// no call.
    pub async fn ensure_slice(
        &self,
        slice_path: &str,
        present: usize,
        description: &str,
        parent_description: &str,
    ) -> Result<()> {
        let names: Vec<&str> = slice_path.split('/').filter(|p| !p.is_empty()).collect();
        for (i, name) in names.iter().enumerate().skip(present) {
            let last = i + 1 == names.len();
            let unit = TransientUnit {
                name,
                description: if last {
                    description
                } else {
                    parent_description
                },
                properties: vec![("DefaultDependencies", PropertyValue::Bool(false))],
            };
            self.start_new(&unit).await?;
        }
        Ok(())
    }

    /// The unit's description, None when systemd has no such unit loaded.
    pub async fn description(&self, unit: &str) -> Result<Option<String>> {
        let reply = match self.manager_call("GetUnit", unit, &(unit,)).await {
            Ok(reply) => reply,
            Err(SystemdError::Call { source, .. }) if error_name(&source) == Some(NO_SUCH_UNIT) => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let call_err = |source| SystemdError::Call {
            method: "GetUnit",
            unit: unit.to_string(),
            source,
        };
        let path: OwnedObjectPath = reply.body().deserialize().map_err(call_err)?;
        let reply = self
            .call(
                path.as_str(),
                PROPERTIES,
                "Get",
                unit,
                &(UNIT, "Description"),
            )
            .await?;
        let value: OwnedValue = reply.body().deserialize().map_err(call_err)?;
        Ok(String::try_from(value).ok())
    }

    /// SetUnitProperties with runtime=true: the change lasts until the unit goes away.
    pub async fn set_properties(&self, unit: &str, properties: &[Property]) -> Result<()> {
        if properties.is_empty() {
            return Ok(());
        }
        let body = (unit, true, to_values(properties));
        self.manager_call("SetUnitProperties", unit, &body)
            .await
            .map(|_| ())
    }

    /// Stops berth's unit `unit` (when its description says it is berth's and it is still
    /// loaded) and resets a failed state, so that the name can be used again. A unit
    /// that is gone is fine; one berth did not make is left alone.
    pub async fn release(&self, unit: &str, description: &str) -> Result<()> {
        match self.description(unit).await? {
            None => return Ok(()),
            Some(found) if found != description => {
                tracing::warn!(unit, description = %found, "not stopping a unit berth did not make");
                return Ok(());
            }
            Some(_) => {}
        }
        match self.run_job("StopUnit", unit, &(unit, "replace")).await {
            Ok(()) => {}
            Err(SystemdError::Call { source, .. }) if error_name(&source) == Some(NO_SUCH_UNIT) => {
            }
            Err(e) => return Err(e),
        }
        match self.manager_call("ResetFailedUnit", unit, &(unit,)).await {
            Ok(_) => Ok(()),
            Err(SystemdError::Call { source, .. }) if error_name(&source) == Some(NO_SUCH_UNIT) => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// KillUnit: `signal` to every process of the unit.
    pub async fn kill_unit(&self, unit: &str, signal: i32) -> Result<()> {
        self.manager_call("KillUnit", unit, &(unit, "all", signal))
            .await
            .map(|_| ())
    }

    /// Units whose names match `patterns` (shell globs), in any state systemd still
    /// holds them in.
    pub async fn list_units(&self, patterns: &[&str]) -> Result<Vec<ListedUnit>> {
        let states: Vec<&str> = Vec::new();
        let reply = self
            .manager_call(
                "ListUnitsByPatterns",
                "(list)",
                &(states, patterns.to_vec()),
            )
            .await?;
        type Row = (
            String,
            String,
            String,
            String,
            String,
            String,
            OwnedObjectPath,
            u32,
            String,
            OwnedObjectPath,
        );
        let rows: Vec<Row> = reply
            .body()
            .deserialize()
            .map_err(|source| SystemdError::Call {
                method: "ListUnitsByPatterns",
                unit: patterns.join(" "),
                source,
            })?;
        Ok(rows
            .into_iter()
            .map(|r| ListedUnit {
                name: r.0,
                description: r.1,
                active_state: r.3,
            })
            .collect())
    }
}
