//! Answers of SQL functions remembered per backend (`auth.uid()` for a JWT, `plan_in_effect`
//! for a plan and status, `usage_bucket_start` for this month): each is computed by the
//! function itself, through SPI, the first time, so its rule stays written once, in SQL.
//! Any change to pg_proc (a function redefined, an extension updated) forgets them all.
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::Hash;

use pgrx::pg_sys;

thread_local! {
    static REGISTERED: Cell<bool> = const { Cell::new(false) };
    // Bumped by every pg_proc invalidation this backend processes.
    static GENERATION: Cell<u64> = const { Cell::new(0) };
}

/// The current pg_proc generation; an answer computed under one is valid while it lasts.
pub fn generation() -> u64 {
    if !REGISTERED.with(|r| r.replace(true)) {
        // SAFETY: registers a plain function pointer once per backend; it lives as long as it.
        unsafe {
            pg_sys::CacheRegisterSyscacheCallback(
                pg_sys::SysCacheIdentifier::PROCOID as i32,
                Some(on_pg_proc_invalidation),
                pg_sys::Datum::from(0),
            )
        };
    }
    GENERATION.with(Cell::get)
}

/// Runs inside PostgreSQL's invalidation processing: only counts, nothing that can fail.
unsafe extern "C-unwind" fn on_pg_proc_invalidation(_arg: pg_sys::Datum, _cache: i32, _hash: u32) {
    GENERATION.with(|g| g.set(g.get().wrapping_add(1)));
}

/// Answers by argument, each kept with the generation it was computed in.
pub struct Memo<K, V> {
    answers: RefCell<HashMap<K, (u64, V)>>,
}

impl<K: Eq + Hash, V: Clone> Memo<K, V> {
    pub fn new() -> Self {
        Memo {
            answers: RefCell::new(HashMap::new()),
        }
    }

    /// The remembered answer for `key`, if computed since pg_proc last changed.
    pub fn get(&self, key: &K) -> Option<V> {
        let now = generation();
        let answers = self.answers.borrow();
        let (at, value) = answers.get(key)?;
        (*at == now).then(|| value.clone())
    }

    /// `compute`s the answer, keeping it unless pg_proc changed while it ran.
    pub fn compute(&self, key: K, compute: impl FnOnce() -> V) -> V {
        let before = generation();
        let value = compute();
        if generation() == before {
            let mut answers = self.answers.borrow_mut();
            // A handful of keys in practice; a flood of distinct ones starts over.
            if answers.len() >= 1024 {
                answers.clear();
            }
            answers.insert(key, (before, value.clone()));
        }
        value
    }
}
