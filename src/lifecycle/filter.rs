//! The filter of ListPodSandbox and ListContainers (and their stats calls), one for both
//! kinds: an id prefix, the pod (containers only), a state, labels that must all match.

use std::collections::HashMap;

use super::transition::Record;

#[derive(Debug, Clone)]
pub struct Filter<S> {
    /// A prefix of the object's id.
    pub id: Option<String>,
    /// A prefix of the pod's id; only containers belong to one.
    pub sandbox_id: Option<String>,
    /// The state the object reads as (a pod whose pause died reads NotReady).
    pub state: Option<S>,
    pub labels: HashMap<String, String>,
}

impl<S> Default for Filter<S> {
    fn default() -> Self {
        Filter {
            id: None,
            sandbox_id: None,
            state: None,
            labels: HashMap::new(),
        }
    }
}

impl<S: PartialEq> Filter<S> {
    pub(super) fn selects<R: Record<State = S>>(&self, record: &R, reads_as: &S) -> bool {
        let prefix = |want: &Option<String>, have: Option<&str>| {
            want.as_ref()
                .is_none_or(|want| have.is_some_and(|have| have.starts_with(want.as_str())))
        };
        prefix(&self.id, Some(record.id()))
            && prefix(&self.sandbox_id, record.sandbox_id())
            && self.state.as_ref().is_none_or(|want| want == reads_as)
            && self
                .labels
                .iter()
                .all(|(k, v)| record.labels().get(k) == Some(v))
    }
}
