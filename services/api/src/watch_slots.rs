//! WatchChangeRequest streams held open per caller, bounded: each stream polls the database for as long as it is
//! open (1,000 streams of one caller drove ~5,900 Postgres commits/s), so one caller may hold at most
//! [`MAX_WATCHES_PER_CALLER`] at once; one more is RESOURCE_EXHAUSTED until one closes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::ApiError;

/// Far above a person's terminals or a pipeline's parallel jobs watching their own requests; far below what
/// loads the database.
pub const MAX_WATCHES_PER_CALLER: usize = 16;

/// The count of open watches per caller identity, shared by every call of this process.
#[derive(Debug, Clone, Default)]
pub struct WatchSlots {
    open: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open watch: the slot is given back when the stream holding it is dropped (the client went away, or the
/// stream ended).
#[derive(Debug)]
pub struct WatchSlot {
    slots: WatchSlots,
    identity: String,
}

impl WatchSlots {
    /// A slot for one more watch of `identity`, if it holds fewer than the maximum.
    pub fn take(&self, identity: &str) -> Result<WatchSlot, ApiError> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(identity.to_owned()).or_default();
        if *count >= MAX_WATCHES_PER_CALLER {
            return Err(ApiError::ResourceExhausted(format!(
                "at most {MAX_WATCHES_PER_CALLER} WatchChangeRequest streams per caller at once: close one first"
            )));
        }
        *count += 1;
        Ok(WatchSlot {
            slots: self.clone(),
            identity: identity.to_owned(),
        })
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = self
            .slots
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.identity) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.identity);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_holds_at_most_the_maximum_and_gets_slots_back_when_streams_close() {
        let slots = WatchSlots::default();
        let held: Vec<WatchSlot> = (0..MAX_WATCHES_PER_CALLER)
            .map(|_| slots.take("alice").expect("within the maximum"))
            .collect();
        assert!(matches!(
            slots.take("alice"),
            Err(ApiError::ResourceExhausted(_))
        ));
        let bob = slots
            .take("bob")
            .expect("another caller is not limited by alice");
        drop(held);
        assert!(
            slots.open.lock().expect("lock").get("alice").is_none(),
            "every slot given back"
        );
        slots.take("alice").expect("a slot again");
        drop(bob);
        assert!(slots.open.lock().expect("lock").get("bob").is_none());
    }
}
