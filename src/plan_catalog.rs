//! A per-backend cache of `feature_definitions` and `plan_features`, so that
//! `check_feature_access` reads only what changes per request (membership, subscription, usage).
//!
//! Any write to either table fires `invalidate_plan_catalog()`, which queues a relcache
//! invalidation of that table: at commit PostgreSQL delivers it to every backend, whose
//! callback drops its cache; the writing backend sees it at its next command.
//!
//! A load is kept only if it cannot predate a change whose invalidation was already taken:
//! pending invalidations are accepted first, rows are read with a fresh READ COMMITTED
//! snapshot, and a load during which an invalidation arrived (or one read under a
//! REPEATABLE READ / SERIALIZABLE transaction snapshot) serves that call only.
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;

use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::spi::{Expect, Statement};

/// How usage of a limit is measured (`feature_definitions.usage_measure`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Measure {
    /// Sum of the events' quantities.
    Sum,
    /// Distinct users with an event.
    UniqueUsers,
    /// Members of the organization.
    Members,
    /// A limit reported without usage.
    Unmetered,
}

/// Over which period usage counts (`feature_definitions.usage_window`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Window {
    Month,
    Lifetime,
    /// Right now (members), or not metered.
    Current,
}

impl Window {
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Month => "month",
            Window::Lifetime => "lifetime",
            Window::Current => "current",
        }
    }
}

/// What a limit counts (one row of feature_definitions), parsed once when the catalog loads.
pub struct Meter {
    pub event_type: Option<String>,
    pub window: Window,
    pub measure: Measure,
}

pub enum Feature<'a> {
    Limit(&'a Meter),
    /// The 'features' row: all boolean flags of a plan.
    AllFlags,
    /// One boolean flag, named in some plan's flags.
    Flag,
}

/// A plan's limit for a feature. The one reading of a `plan_features` row, shared by
/// `check_feature_access` and the seat limit: `-1` is unlimited, a missing row (or a row
/// without a number) grants nothing.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Limit {
    Unlimited,
    Capped(i64),
    NotGranted,
}

impl Limit {
    /// Whether usage `used` is still under the limit (one more unit may be used).
    pub fn allows(self, used: f64) -> bool {
        match self {
            Limit::Unlimited => true,
            Limit::Capped(n) => used < n as f64,
            Limit::NotGranted => false,
        }
    }

    /// The number clients see: -1 for unlimited, none when not granted.
    pub fn value(self) -> Option<i64> {
        match self {
            Limit::Unlimited => Some(-1),
            Limit::Capped(n) => Some(n),
            Limit::NotGranted => None,
        }
    }
}

/// What happens when a limit is reached (`plan_features.enforcement`): a hard limit refuses
/// more usage; a soft one records it as overage (for usage-based billing).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Enforcement {
    Hard,
    Soft,
}

impl Enforcement {
    pub fn as_str(self) -> &'static str {
        match self {
            Enforcement::Hard => "hard",
            Enforcement::Soft => "soft",
        }
    }
}

pub struct PlanCatalog {
    /// The extension's schema (where the catalog's tables are), for reads by index.
    pub schema: pg_sys::Oid,
    limits: HashMap<String, Meter>,
    flags_key: HashSet<String>,
    limit_values: HashMap<(String, String), (Option<i64>, Enforcement)>,
    plan_flags: HashMap<String, BTreeMap<String, bool>>,
    flag_names: HashSet<String>,
}

impl PlanCatalog {
    pub fn feature(&self, key: &str) -> Option<Feature<'_>> {
        if let Some(m) = self.limits.get(key) {
            return Some(Feature::Limit(m));
        }
        if self.flags_key.contains(key) {
            return Some(Feature::AllFlags);
        }
        self.flag_names.contains(key).then_some(Feature::Flag)
    }

    pub fn limit(&self, plan: &str, key: &str) -> Limit {
        match self
            .limit_values
            .get(&(plan.to_string(), key.to_string()))
            .and_then(|(value, _)| *value)
        {
            Some(-1) => Limit::Unlimited,
            Some(n) => Limit::Capped(n),
            None => Limit::NotGranted,
        }
    }

    pub fn enforcement(&self, plan: &str, key: &str) -> Enforcement {
        self.limit_values
            .get(&(plan.to_string(), key.to_string()))
            .map(|(_, e)| *e)
            .unwrap_or(Enforcement::Hard)
    }

    /// The limits that count events of `event_type`, with their feature keys.
    pub fn limits_counting(&self, event_type: &str) -> Vec<(&str, &Meter)> {
        let mut found: Vec<(&str, &Meter)> = self
            .limits
            .iter()
            .filter(|(_, m)| m.event_type.as_deref() == Some(event_type))
            .map(|(k, m)| (k.as_str(), m))
            .collect();
        found.sort_by_key(|(k, _)| *k);
        found
    }

    /// Every limit, by feature key.
    pub fn all_limits(&self) -> Vec<(&str, &Meter)> {
        let mut found: Vec<(&str, &Meter)> =
            self.limits.iter().map(|(k, m)| (k.as_str(), m)).collect();
        found.sort_by_key(|(k, _)| *k);
        found
    }

    /// The plan's boolean flags (a flag whose value is not `true` is off).
    pub fn flags(&self, plan: &str) -> Option<&BTreeMap<String, bool>> {
        self.plan_flags.get(plan)
    }
}

thread_local! {
    static CACHE: RefCell<Option<Rc<PlanCatalog>>> = const { RefCell::new(None) };
    static WATCHED: Cell<[pg_sys::Oid; 2]> = const { Cell::new([pg_sys::InvalidOid; 2]) };
    static CALLBACK_REGISTERED: Cell<bool> = const { Cell::new(false) };
    // Bumped by every invalidation of a watched table.
    static GENERATION: Cell<u64> = const { Cell::new(0) };
}

static TABLE_OIDS: Statement = Statement::read(
    "SELECT 'feature_definitions'::regclass::oid, 'plan_features'::regclass::oid",
    &[],
);
// Planned as non-read-only so that each read takes a fresh snapshot (see the module comment).
static DEFINITIONS: Statement = Statement::write(
    "SELECT feature_key, kind, usage_event_type, usage_window, usage_measure FROM feature_definitions",
    &[],
);
static PLAN_LIMITS: Statement = Statement::write(
    // to_jsonb: a database still on 0.1.0's schema has no enforcement column (all hard).
    "SELECT pf.plan, pf.feature_key, pf.limit_value, (to_jsonb(pf) ->> 'enforcement') = 'soft'
     FROM plan_features pf",
    &[],
);
// Flags are read key by key in SQL: an operator's JSON is never handed to a Rust parser.
static PLAN_FLAGS: Statement = Statement::write(
    "SELECT pf.plan, f.key, f.value = 'true'::jsonb
     FROM plan_features pf
     CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(pf.flags) = 'object' THEN pf.flags END) f",
    &[],
);

/// The cached catalog, if loaded and unchanged since.
pub fn cached() -> Option<Rc<PlanCatalog>> {
    // SAFETY: processes queued invalidations, as any lock acquisition would.
    unsafe { pg_sys::AcceptInvalidationMessages() };
    CACHE.with(|c| c.borrow().clone())
}

/// The cached catalog, loaded on first use and after any change to its tables.
pub fn get(client: &mut SpiClient<'_>) -> Rc<PlanCatalog> {
    if let Some(c) = cached() {
        return c;
    }
    register_callback();
    let oids = client
        .select(TABLE_OIDS.prepared(client), Some(1), &[])
        .or_fail("reading the plan catalog");
    let row = oids.first();
    let watched = [
        row.get::<pg_sys::Oid>(1)
            .or_fail("reading the plan catalog")
            .unwrap_or(pg_sys::InvalidOid),
        row.get::<pg_sys::Oid>(2)
            .or_fail("reading the plan catalog")
            .unwrap_or(pg_sys::InvalidOid),
    ];
    WATCHED.with(|w| w.set(watched));
    let generation = GENERATION.with(|g| g.get());

    let mut catalog = PlanCatalog {
        // SAFETY: a syscache lookup of a relation this statement just resolved.
        schema: unsafe { pg_sys::get_rel_namespace(watched[0]) },
        limits: HashMap::new(),
        flags_key: HashSet::new(),
        limit_values: HashMap::new(),
        plan_flags: HashMap::new(),
        flag_names: HashSet::new(),
    };
    let what = "reading the plan catalog";
    for r in client
        .update(DEFINITIONS.prepared(client), None, &[])
        .or_fail(what)
    {
        let key: String = r.get(1).or_fail(what).unwrap_or_default();
        match r.get::<String>(2).or_fail(what).as_deref() {
            Some("limit") => {
                let window = match r.get::<String>(4).or_fail(what).as_deref() {
                    Some("month") => Window::Month,
                    Some("lifetime") => Window::Lifetime,
                    _ => Window::Current,
                };
                let measure = match r.get::<String>(5).or_fail(what).as_deref() {
                    Some("sum") => Measure::Sum,
                    Some("unique_users") => Measure::UniqueUsers,
                    Some("members") => Measure::Members,
                    _ => Measure::Unmetered,
                };
                let meter = Meter {
                    event_type: r.get(3).or_fail(what),
                    window,
                    measure,
                };
                catalog.limits.insert(key, meter);
            }
            _ => {
                catalog.flags_key.insert(key);
            }
        }
    }
    for r in client
        .update(PLAN_LIMITS.prepared(client), None, &[])
        .or_fail(what)
    {
        let plan: String = r.get(1).or_fail(what).unwrap_or_default();
        let key: String = r.get(2).or_fail(what).unwrap_or_default();
        let limit: Option<i64> = r.get(3).or_fail(what);
        let enforcement = if r.get::<bool>(4).or_fail(what).unwrap_or(false) {
            Enforcement::Soft
        } else {
            Enforcement::Hard
        };
        catalog
            .limit_values
            .insert((plan, key), (limit, enforcement));
    }
    for r in client
        .update(PLAN_FLAGS.prepared(client), None, &[])
        .or_fail(what)
    {
        let plan: String = r.get(1).or_fail(what).unwrap_or_default();
        let flag: String = r.get(2).or_fail(what).unwrap_or_default();
        let on: bool = r.get(3).or_fail(what).unwrap_or(false);
        catalog.flag_names.insert(flag.clone());
        catalog.plan_flags.entry(plan).or_default().insert(flag, on);
    }
    let catalog = Rc::new(catalog);
    // SAFETY: reads the backend's current transaction isolation level.
    let read_committed = unsafe { pg_sys::XactIsoLevel } < pg_sys::XACT_REPEATABLE_READ as i32;
    if read_committed && GENERATION.with(|g| g.get()) == generation {
        CACHE.with(|c| *c.borrow_mut() = Some(catalog.clone()));
    }
    catalog
}

fn register_callback() {
    if CALLBACK_REGISTERED.with(|r| r.replace(true)) {
        return;
    }
    // SAFETY: registers a plain function pointer once per backend; it lives as long as the backend.
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(
            Some(on_relcache_invalidation),
            pg_sys::Datum::from(0),
        )
    };
}

/// Runs inside PostgreSQL's invalidation processing: only drop the cache, nothing that can fail.
unsafe extern "C-unwind" fn on_relcache_invalidation(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    let watched = WATCHED.with(|w| w.get());
    if relid == pg_sys::InvalidOid || watched.contains(&relid) {
        GENERATION.with(|g| g.set(g.get().wrapping_add(1)));
        CACHE.with(|c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                *c = None;
            }
        });
    }
}

/// AFTER INSERT/UPDATE/DELETE/TRUNCATE FOR EACH STATEMENT on feature_definitions and
/// plan_features: every backend drops its cached catalog once the change commits.
#[pg_trigger]
pub fn invalidate_plan_catalog<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, pgrx::datum::TryFromDatumError> {
    let relid = trigger.relid().unwrap_or(pg_sys::InvalidOid);
    // SAFETY: queues a relcache invalidation message for a relation that exists (it fired us).
    unsafe { pg_sys::CacheInvalidateRelcacheByRelid(relid) };
    Ok(None)
}
