//! The per-replica cache of computed values, bounded in bytes so that asking for many
//! large n cannot grow a replica without limit; the oldest entries go first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

#[derive(Debug)]
pub struct Cache {
    inner: Mutex<Inner>,
    budget_bytes: usize,
}

#[derive(Debug, Default)]
struct Inner {
    values: HashMap<u64, Arc<str>>,
    order: VecDeque<u64>,
    bytes: usize,
}

impl Cache {
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            inner: Mutex::default(),
            budget_bytes,
        }
    }

    pub fn get(&self, n: u64) -> Option<Arc<str>> {
        self.lock().values.get(&n).cloned()
    }

    /// Stores F(n); a value larger than the whole budget is not kept.
    pub fn insert(&self, n: u64, value: Arc<str>) {
        if value.len() > self.budget_bytes {
            return;
        }
        let mut inner = self.lock();
        if inner.values.contains_key(&n) {
            return;
        }
        inner.bytes += value.len();
        inner.values.insert(n, value);
        inner.order.push_back(n);
        while inner.bytes > self.budget_bytes {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(evicted) = inner.values.remove(&oldest) {
                inner.bytes -= evicted.len();
            }
        }
    }

    pub fn len(&self) -> usize {
        self.lock().values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_entries_leave_when_the_budget_is_spent() {
        let cache = Cache::new(10);
        cache.insert(1, "1234".into());
        cache.insert(2, "5678".into());
        assert_eq!(cache.len(), 2);
        cache.insert(3, "9012".into());
        assert_eq!(cache.len(), 2);
        assert!(cache.get(1).is_none());
        assert_eq!(cache.get(3).as_deref(), Some("9012"));
        cache.insert(4, "x".repeat(11).into());
        assert!(cache.get(4).is_none(), "larger than the budget");
    }
}
