//! Admitting an event against the limits it counts against: the one rule `record_usage`,
//! `record_usage_batch` and members' direct INSERTs share.
//!
//! A hard limit must hold exactly however many callers record at once, yet callers of one
//! organization must not all queue on one row lock (held until each commits). So each writing
//! backend holds a lease on part of what is left (`usage_meter_leases`, one row per writer, the
//! same slot as its counter row) and records within it touching only its own row. A caller
//! whose lease cannot take the event takes the meter's turn (`usage_meter_locks`) and is granted
//! a new share of what no lease holds; only when that is not enough are idle leases reclaimed:
//!
//!   usage (committed) + unused leases ≤ limit
//!
//! holds at every commit, because recording consumes a lease in the same transaction as the
//! event, and only the turn-holder grants. Near the limit the shares shrink to what one event
//! needs, so the last units go one caller at a time, and a refusal is exact: before refusing,
//! the turn-holder waits for leases in use to be returned. Distinct-user limits (a new user
//! is only known under the turn) always take the turn.
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::Uuid;

use crate::errors;
use crate::index_reads;
use crate::meters;
use crate::plan_catalog::{Enforcement, Limit, Measure, PlanCatalog, Window};
use crate::spi::{self, types, Statement};

/// A refusal that `record_usage` raises and `record_usage_batch` reports per event.
pub struct Refusal {
    pub code: PgSqlErrorCode,
    pub message: String,
    pub hint: Option<&'static str>,
}

impl Refusal {
    pub fn new(code: PgSqlErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
            hint: None,
        }
    }

    pub fn raise(self) -> ! {
        match self.hint {
            Some(hint) => errors::raise_with_hint(self.code, self.message, hint),
            None => errors::raise(self.code, self.message),
        }
    }

    /// The five-character SQLSTATE from PostgreSQL's packed representation.
    pub fn sqlstate(&self) -> String {
        let mut code = self.code as i32;
        let mut out = String::new();
        for _ in 0..5 {
            out.push((((code & 0x3F) as u8) + b'0') as char);
            code >>= 6;
        }
        out
    }

    fn limit_reached(feature_key: &str, limit: i64, usage: f64, more: f64) -> Self {
        Refusal {
            code: PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            message: format!(
                "{feature_key}: the limit of {limit} is reached (usage {}, this event {})",
                crate::entitlements::number(usage),
                crate::entitlements::number(more)
            ),
            hint: Some("Upgrade the plan, or wait until the limit's window resets."),
        }
    }

    fn not_granted(feature_key: &str) -> Self {
        Refusal {
            code: PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            message: format!("{feature_key}: the plan grants none"),
            hint: Some("Upgrade the plan, or wait until the limit's window resets."),
        }
    }
}

/// An event to admit. `pending` is what earlier events of the same statement or batch, not
/// written yet, add to its meters; `user_seen` says one of them already brought its user.
pub struct Candidate<'a> {
    pub org: Uuid,
    pub event_type: &'a str,
    pub quantity: f64,
    pub user: Option<Uuid>,
    pub pending: f64,
    pub user_seen: bool,
}

/// An admitted event: whether it is recorded past a soft limit (overage).
pub struct Admission {
    pub over_soft: bool,
}

static LOCK_METER: Statement = Statement::write(
    "INSERT INTO usage_meter_locks AS l (organization_id, event_type) VALUES ($1, $2)
     ON CONFLICT (organization_id, event_type) DO UPDATE SET turns = l.turns + 1",
    &[types::UUID, types::TEXT],
);

/// The lease's window: this UTC month, or all time.
macro_rules! lease_window {
    () => {
        "(CASE WHEN $3 THEN usage_bucket_start('monthly', now()) ELSE '-infinity'::timestamptz END)"
    };
}

static TAKE_FROM_LEASE: Statement = Statement::write(
    concat!(
        "UPDATE usage_meter_leases l SET used = l.used + $4::float8::numeric
         WHERE l.organization_id = $1 AND l.feature_key = $2 AND l.writer = usage_writer()
           AND l.window_start = ",
        lease_window!(),
        " AND l.limit_value = $5 AND l.used + $4::float8::numeric <= l.granted
         RETURNING true"
    ),
    &[
        types::UUID,
        types::TEXT,
        types::BOOL,
        types::FLOAT8,
        types::INT8,
    ],
);

// Idle leases (no transaction is recording with them) give back what they did not use.
static RECLAIM_IDLE: Statement = Statement::write(
    "UPDATE usage_meter_leases l SET granted = l.used
     WHERE l.ctid = ANY (ARRAY(SELECT x.ctid FROM usage_meter_leases x
                               WHERE x.organization_id = $1 AND x.feature_key = $2
                                 AND x.writer <> usage_writer() AND x.granted > x.used
                               FOR UPDATE SKIP LOCKED))",
    &[types::UUID, types::TEXT],
);

// Leases in use: waits for their transactions, then takes back what they did not use.
static RECLAIM_ALL: Statement = Statement::write(
    "UPDATE usage_meter_leases l SET granted = l.used
     WHERE l.organization_id = $1 AND l.feature_key = $2 AND l.writer <> usage_writer()
       AND l.granted > l.used",
    &[types::UUID, types::TEXT],
);

static OUTSTANDING: Statement = Statement::read(
    concat!(
        "SELECT coalesce(sum(l.granted - l.used), 0)::float8 FROM usage_meter_leases l
         WHERE l.organization_id = $1 AND l.feature_key = $2 AND l.writer <> usage_writer()
           AND l.window_start = ",
        lease_window!(),
        " AND l.limit_value = $4 AND l.granted > l.used"
    ),
    &[types::UUID, types::TEXT, types::BOOL, types::INT8],
);

// A new share for this writer, the event's quantity taken from it at once.
static GRANT: Statement = Statement::write(
    concat!(
        "INSERT INTO usage_meter_leases AS l
             (organization_id, feature_key, writer, window_start, limit_value, granted, used)
         VALUES ($1, $2, usage_writer(), ",
        lease_window!(),
        ", $4, $5::float8::numeric, $6::float8::numeric)
         ON CONFLICT (organization_id, feature_key, writer) DO UPDATE
         SET granted = CASE WHEN l.window_start = excluded.window_start AND l.limit_value = excluded.limit_value
                            THEN l.used ELSE 0 END + excluded.granted,
             used    = CASE WHEN l.window_start = excluded.window_start AND l.limit_value = excluded.limit_value
                            THEN l.used ELSE 0 END + excluded.used,
             window_start = excluded.window_start,
             limit_value  = excluded.limit_value"
    ),
    &[
        types::UUID,
        types::TEXT,
        types::BOOL,
        types::INT8,
        types::FLOAT8,
        types::FLOAT8,
    ],
);

static USER_COUNTED: Statement = Statement::read(
    "SELECT EXISTS (SELECT 1 FROM usage_active_users u
                    WHERE u.organization_id = $1 AND u.event_type = $2 AND u.period = 'monthly'
                      AND u.period_start = usage_bucket_start('monthly', now()) AND u.user_id = $3)",
    &[types::UUID, types::TEXT, types::UUID],
);

/// What the event adds to a limit's usage.
fn increase(measure: Measure, quantity: f64, new_user: bool) -> f64 {
    match measure {
        Measure::Sum => quantity,
        Measure::UniqueUsers if new_user => 1.0,
        _ => 0.0,
    }
}

/// Admits the event against every limit of `plan` that counts `event_type`, or refuses it.
/// Hard limits are held exactly (see the module's comment); soft limits only flag overage.
pub fn admit(
    client: &mut SpiClient<'_>,
    catalog: &PlanCatalog,
    plan: &str,
    event: &Candidate,
) -> Result<Admission, Refusal> {
    let counting = catalog.limits_counting(event.event_type);
    let mut over_soft = false;
    let mut turn_taken = false;
    let mut new_user: Option<bool> = None;
    for (key, meter) in counting {
        let limit = catalog.limit(plan, key);
        let enforcement = catalog.enforcement(plan, key);
        let needs_user = meter.measure == Measure::UniqueUsers;
        if needs_user && new_user.is_none() {
            new_user = Some(counts_a_new_user(client, event));
        }
        let more = increase(meter.measure, event.quantity, new_user.unwrap_or(false));
        let monthly = meter.window == Window::Month;
        // The usage this event is checked against, read after the meter's turn (a lease
        // holder need not read it to be admitted).
        match (limit, enforcement) {
            (Limit::NotGranted, _) if more > 0.0 => return Err(Refusal::not_granted(key)),
            (Limit::Capped(n), Enforcement::Hard) if more > 0.0 => {
                let leased = meter.measure == Measure::Sum
                    && take_from_lease(client, catalog.schema, event.org, key, monthly, more, n);
                if !leased {
                    if !turn_taken {
                        spi::run(
                            client,
                            &LOCK_METER,
                            &[event.org.into(), event.event_type.into()],
                            "taking the meter's turn",
                        );
                        turn_taken = true;
                    }
                    if meter.measure == Measure::UniqueUsers {
                        let now = meters::usage(catalog, event.org, meter);
                        if now + event.pending + more > n as f64 {
                            return Err(Refusal::limit_reached(key, n, now + event.pending, more));
                        }
                    } else {
                        grant(client, catalog, event, key, meter, n, more, monthly)?;
                    }
                }
            }
            (Limit::Capped(n), Enforcement::Soft) if more > 0.0 => {
                let now = meters::usage(catalog, event.org, meter);
                over_soft |= now + event.pending + more > n as f64;
            }
            _ => {}
        }
    }
    Ok(Admission { over_soft })
}

/// Takes `more` from this writer's lease of the limit `key` when the lease is of this window
/// and limit and has room; false when it cannot take it. The lease row is this backend's
/// own: it is updated in place (src/index_reads.rs) as TAKE_FROM_LEASE would update it, and
/// through that statement when that cannot be done.
fn take_from_lease(
    client: &mut SpiClient<'_>,
    schema: pg_sys::Oid,
    org: Uuid,
    key: &str,
    monthly: bool,
    more: f64,
    limit: i64,
) -> bool {
    let in_place = (|| {
        let take = pgrx::AnyNumeric::try_from(more).ok()?;
        let window = if monthly {
            // SAFETY: the transaction's start, which now() returns.
            let now = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
            crate::metering::Period::Monthly.bucket(now).0
        } else {
            i64::MIN // -infinity
        };
        let keys = [
            index_reads::Key::Uuid(org),
            index_reads::Key::Text(key),
            index_reads::Key::Int4(crate::metering::usage_writer()),
        ];
        let lease = index_reads::KeyedRows {
            table: c"usage_meter_leases",
            index: c"usage_meter_leases_pkey",
            rows: &[&keys],
            columns: &[c"window_start", c"limit_value", c"granted", c"used"],
            // used <= granted: checked below before writing.
            checks_upheld: &[c"usage_meter_leases_used_check"],
            remember: true,
        };
        let mut no_room = false;
        let done = index_reads::update_in_place(schema, &lease, |_, row| {
            let [Some(start), Some(value), Some(granted), Some(used)] =
                [row[0], row[1], row[2], row[3]]
            else {
                return false;
            };
            // SAFETY: a timestamptz, a bigint and two numerics, non-null, read while pinned.
            let (start, value, granted, used) = unsafe {
                (
                    i64::from_polymorphic_datum(start, false, pg_sys::TIMESTAMPTZOID),
                    i64::from_polymorphic_datum(value, false, pg_sys::INT8OID),
                    pgrx::AnyNumeric::from_polymorphic_datum(granted, false, pg_sys::NUMERICOID),
                    pgrx::AnyNumeric::from_polymorphic_datum(used, false, pg_sys::NUMERICOID),
                )
            };
            let (Some(start), Some(value), Some(granted), Some(used)) =
                (start, value, granted, used)
            else {
                return false;
            };
            let after = used + take.clone();
            if start != window || value != limit || after > granted {
                no_room = true;
                return false;
            }
            row[3] = after.into_datum();
            row[3].is_some()
        });
        match done.first() {
            Some(index_reads::InPlace::Done) => Some(true),
            _ if no_room => Some(false),
            _ => None,
        }
    })();
    in_place.unwrap_or_else(|| {
        spi::one_mut::<bool>(
            client,
            &TAKE_FROM_LEASE,
            &[
                org.into(),
                key.into(),
                monthly.into(),
                more.into(),
                limit.into(),
            ],
            "taking from the lease",
        )
        .is_some()
    })
}

/// Under the meter's turn: reclaims idle leases and grants this writer a share of what is
/// left, or refuses when even one event's worth is not left once leases in use are returned.
#[allow(clippy::too_many_arguments)]
fn grant(
    client: &mut SpiClient<'_>,
    catalog: &PlanCatalog,
    event: &Candidate,
    key: &str,
    meter: &crate::plan_catalog::Meter,
    limit: i64,
    more: f64,
    monthly: bool,
) -> Result<(), Refusal> {
    let what = "granting a share of the limit";
    let outstanding = |client: &SpiClient<'_>| {
        spi::one::<f64>(
            client,
            &OUTSTANDING,
            &[event.org.into(), key.into(), monthly.into(), limit.into()],
            what,
        )
        .unwrap_or(0.0)
    };
    let mut usage = meters::usage(catalog, event.org, meter) + event.pending;
    let mut held = outstanding(client);
    let mut left = limit as f64 - usage - held;
    if more > left && held > 0.0 {
        // Other writers' leases hold the rest: idle ones give back what they did not use.
        spi::run(client, &RECLAIM_IDLE, &[event.org.into(), key.into()], what);
        held = outstanding(client);
        left = limit as f64 - usage - held;
    }
    if more > left && held > 0.0 {
        // Leases in use hold the rest: wait for them to finish, then count again.
        spi::run(client, &RECLAIM_ALL, &[event.org.into(), key.into()], what);
        usage = meters::usage(catalog, event.org, meter) + event.pending;
        left = limit as f64 - usage;
    }
    if more > left {
        return Err(Refusal::limit_reached(key, limit, usage, more));
    }
    // A sixteenth of what is left beyond this event: few grants while far from the limit,
    // one event at a time at its edge.
    let share = more + ((left - more) / 16.0).floor().max(0.0);
    spi::run(
        client,
        &GRANT,
        &[
            event.org.into(),
            key.into(),
            monthly.into(),
            limit.into(),
            share.into(),
            more.into(),
        ],
        what,
    );
    Ok(())
}

/// Whether the event brings a user not counted this month yet.
fn counts_a_new_user(client: &SpiClient<'_>, event: &Candidate) -> bool {
    let Some(user) = event.user else {
        return false;
    };
    !event.user_seen
        && !spi::one::<bool>(
            client,
            &USER_COUNTED,
            &[event.org.into(), event.event_type.into(), user.into()],
            "reading active users",
        )
        .unwrap_or(false)
}
