//! A value that a reload replaces while the connections already open keep
//! the one they started with.
//!
//! Each new connection takes the current value once ([`Current::get`], an
//! `Arc` clone under a read lock) and uses it to the end; a reload
//! ([`Current::set`]) swaps in a new one for the connections after it. The
//! old value is freed when the last connection holding it ends.

use std::sync::{Arc, PoisonError, RwLock};

/// The value now in force.
pub struct Current<T>(RwLock<Arc<T>>);

impl<T> Current<T> {
    /// Starts with `value`.
    pub fn new(value: impl Into<Arc<T>>) -> Current<T> {
        Current(RwLock::new(value.into()))
    }

    /// The value in force now.
    pub fn get(&self) -> Arc<T> {
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts `value` in force for whoever asks next.
    pub fn set(&self, value: impl Into<Arc<T>>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = value.into();
    }
}

#[cfg(test)]
mod tests {
    use super::Current;
    use std::sync::Arc;

    #[test]
    fn a_value_taken_before_a_reload_stays_as_it_was() {
        let c: Current<Vec<&str>> = Current::new(vec!["old"]);
        let taken = c.get();
        c.set(Arc::new(vec!["new"]));
        assert_eq!(*taken, ["old"]);
        assert_eq!(*c.get(), ["new"]);
    }
}
