//! In-memory indexes of the daemon's objects (sandboxes, containers): shared lookups, and
//! locks that survive a poisoned mutex (a panic elsewhere leaves plain data, not a broken
//! invariant, behind them).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, RwLock};

use crate::error::{Error, Result};

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Finds an object by its full id or a unique prefix of it, as people type ids to crictl.
/// `what` names the object ("pod sandbox"), `field` the request field ("pod_sandbox_id").
pub fn lookup<T: Clone>(
    map: &RwLock<HashMap<String, T>>,
    id: &str,
    what: &str,
    field: &str,
) -> Result<T> {
    if id.is_empty() {
        return Err(Error::invalid_argument(format!("{field} is required")));
    }
    let map = map.read().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = map.get(id) {
        return Ok(found.clone());
    }
    let mut found = map.iter().filter(|(k, _)| k.starts_with(id));
    match (found.next(), found.next()) {
        (Some((_, only)), None) => Ok(only.clone()),
        (Some(_), Some(_)) => Err(Error::invalid_argument(format!(
            "{what} id prefix {id} is ambiguous"
        ))),
        _ => Err(Error::not_found(format!("{what} {id} not found"))),
    }
}

pub fn values<T: Clone>(map: &RwLock<HashMap<String, T>>) -> Vec<T> {
    map.read()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_ids_and_unique_prefixes_are_found_ambiguous_and_unknown_ones_are_not() {
        let map = RwLock::new(HashMap::from([
            ("abc123".to_string(), 1),
            ("abd456".to_string(), 2),
        ]));
        assert_eq!(lookup(&map, "abc123", "thing", "thing_id").unwrap(), 1);
        assert_eq!(lookup(&map, "abd", "thing", "thing_id").unwrap(), 2);
        let err = lookup(&map, "ab", "thing", "thing_id").unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
        let err = lookup(&map, "ff", "thing", "thing_id").unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::NotFound);
        assert!(err.to_string().contains("thing ff not found"));
        let err = lookup(&map, "", "thing", "thing_id").unwrap_err();
        assert!(err.to_string().contains("thing_id is required"));
        assert_eq!(values(&map).len(), 2);
    }
}
