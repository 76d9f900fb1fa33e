//! The event log: append-only, numbered, filterable.

use super::{decode, encode, EventRecord, Store, StoreResult};

/// Which events to return.
#[derive(Debug, Default, Clone)]
pub struct EventFilter {
    /// Only events with an id greater than this.
    pub after_id: Option<u64>,
    pub stack_id: Option<String>,
    pub instance_id: Option<String>,
    pub kind: Option<String>,
    /// Only events of stacks in this set (ownership); `None` for all.
    pub stacks: Option<Vec<String>>,
    pub limit: usize,
}

impl EventFilter {
    fn matches(&self, event: &EventRecord) -> bool {
        let same = |want: &Option<String>, have: &Option<String>| {
            want.as_ref().is_none_or(|want| have.as_ref() == Some(want))
        };
        same(&self.stack_id, &event.stack_id)
            && same(&self.instance_id, &event.instance_id)
            && self.kind.as_ref().is_none_or(|kind| &event.kind == kind)
            && self.stacks.as_ref().is_none_or(|stacks| {
                event
                    .stack_id
                    .as_ref()
                    .is_some_and(|id| stacks.iter().any(|s| s == id))
            })
    }
}

impl Store {
    /// Appends an event and returns it with its id. Ids come from sled's
    /// persistent counter, so they keep increasing across restarts.
    pub fn append_event(
        &self,
        kind: &str,
        stack_id: Option<&str>,
        instance_id: Option<&str>,
        time: String,
        data: serde_json::Value,
    ) -> StoreResult<EventRecord> {
        let event = EventRecord {
            id: self.db.generate_id()? + 1,
            time,
            kind: kind.to_owned(),
            stack_id: stack_id.map(str::to_owned),
            instance_id: instance_id.map(str::to_owned),
            data,
        };
        self.events
            .insert(event.id.to_be_bytes(), encode("events", &event)?)?;
        Ok(event)
    }

    /// Events matching `filter`, oldest first.
    pub fn events(&self, filter: &EventFilter) -> StoreResult<Vec<EventRecord>> {
        let start = filter.after_id.map_or(0, |id| id.saturating_add(1));
        let mut out = Vec::new();
        for entry in self.events.range(start.to_be_bytes()..) {
            let (key, value) = entry?;
            let event: EventRecord = decode("events", &key, &value)?;
            if filter.matches(&event) {
                out.push(event);
                if out.len() >= filter.limit {
                    break;
                }
            }
        }
        Ok(out)
    }
}
