//! What a meter has counted so far: the rollup rows `aggregate_usage()` folded plus the
//! counter rows not folded yet (a few per bucket: one per writing backend). Exact at once,
//! and flat in the size of the log. The one place this reading is written:
//! `check_feature_access`, `get_usage_summary`, `record_usage` and the quota all call `usage`.
//!
//! The rows are read through their unique indexes directly (src/index_reads.rs), with what a
//! SPI query in the same place would see: the statement's snapshot until the transaction has
//! written, a new one after (pgrx runs SPI read-only until then). This month's bucket is
//! `usage_bucket_start('monthly', now())`, asked of SQL once a month per backend
//! (`Period::bucket`).
use pgrx::pg_sys;
use pgrx::{AnyNumeric, FromDatum, Uuid};

use crate::index_reads::{self, Key, Probe, Visibility};
use crate::metering::Period;
use crate::plan_catalog::{Measure, Meter, PlanCatalog, Window};

/// `usage_bucket_start('monthly', now())`.
fn this_month_start() -> pg_sys::TimestampTz {
    // SAFETY: reads the transaction's start time, which now() returns.
    let now = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
    Period::Monthly.bucket(now).0
}

/// Adds up a numeric or bigint column over a meter's rows.
#[derive(Default)]
struct Total(Option<AnyNumeric>);

impl Total {
    fn add(&mut self, value: Option<pg_sys::Datum>, type_oid: pg_sys::Oid) {
        // SAFETY: the datum is a non-null column of the type named, read while pinned; the
        // numeric is copied into Rust memory.
        let Some(n) = value.and_then(|d| unsafe {
            if type_oid == pg_sys::NUMERICOID {
                AnyNumeric::from_polymorphic_datum(d, false, type_oid)
            } else {
                i64::from_polymorphic_datum(d, false, type_oid).map(AnyNumeric::from)
            }
        }) else {
            return;
        };
        self.0 = Some(match self.0.take() {
            Some(sum) => sum + n,
            None => n,
        });
    }

    fn value(self) -> f64 {
        self.0.map_or(0.0, |n| f64::try_from(n).unwrap_or(f64::NAN))
    }
}

/// `meter`'s usage in `org` now.
pub fn usage(catalog: &PlanCatalog, org: Uuid, meter: &Meter) -> f64 {
    // One snapshot for every row read: a fold committing between the rollup's read and the
    // counters' would otherwise be counted twice or not at all.
    index_reads::with_snapshot(Visibility::of_spi(), || {
        read_usage(catalog.schema, org, meter)
    })
}

/// `usage`, under the active snapshot.
fn read_usage(schema: pg_sys::Oid, org: Uuid, meter: &Meter) -> f64 {
    let (column, type_oid, this_month) = match (meter.measure, meter.window) {
        (Measure::Members, _) => {
            if meter.event_type.is_some() {
                return 0.0;
            }
            let probe = Probe {
                table: c"organizations",
                index: c"organizations_pkey",
                keys: &[Key::Uuid(org)],
                columns: &[c"member_count"],
            };
            let mut members = 0.0;
            index_reads::scan(schema, &probe, |row| {
                // SAFETY: member_count is an integer column of a pinned row.
                members = row[0]
                    .and_then(|d| unsafe { i32::from_datum(d, false) })
                    .map_or(0.0, f64::from);
            });
            return members;
        }
        (Measure::Unmetered, _) => return 0.0,
        (Measure::Sum, Window::Lifetime) => (c"total_quantity", pg_sys::NUMERICOID, false),
        (Measure::Sum, _) => (c"total_quantity", pg_sys::NUMERICOID, true),
        (Measure::UniqueUsers, _) => (c"unique_users", pg_sys::INT8OID, true),
    };
    let Some(event_type) = meter.event_type.as_deref() else {
        return 0.0;
    };
    let mut keys = vec![Key::Uuid(org), Key::Text(event_type), Key::Text("monthly")];
    if this_month {
        keys.push(Key::Timestamptz(this_month_start()));
    }
    let mut total = Total::default();
    // Folded rollups, then the counts not folded yet.
    for (table, index) in [
        (c"usage_aggregations", c"usage_aggregations_bucket_key"),
        (c"usage_counters", c"usage_counters_pkey"),
    ] {
        let probe = Probe {
            table,
            index,
            keys: &keys,
            columns: &[column],
        };
        index_reads::scan(schema, &probe, |row| total.add(row[0], type_oid));
    }
    total.value()
}
