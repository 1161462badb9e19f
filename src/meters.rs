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

/// Adds up a numeric or bigint column over a meter's rows, exactly: as a fixed-point integer
/// (units of 10^-16) read straight from each value's digits, and through `numeric` arithmetic
/// for any value that does not fit that (more decimals, too large, NaN or infinite). A meter
/// has one row per writing backend, so this runs a dozen times per read.
#[derive(Default)]
struct Total {
    fixed: i128,
    other: Option<AnyNumeric>,
}

/// 10^16: the fixed-point scale, four base-10000 numeric digits.
const FIXED_SCALE: i128 = 10_000_000_000_000_000;

impl Total {
    fn add(&mut self, value: Option<pg_sys::Datum>, type_oid: pg_sys::Oid) {
        let Some(datum) = value else {
            return;
        };
        let fixed = if type_oid == pg_sys::NUMERICOID {
            // SAFETY: a non-null numeric column of a pinned row.
            unsafe { numeric_as_fixed(datum) }
        } else {
            // SAFETY: a non-null bigint column.
            unsafe { i64::from_polymorphic_datum(datum, false, type_oid) }
                .and_then(|n| i128::from(n).checked_mul(FIXED_SCALE))
        };
        if let Some(sum) = fixed.and_then(|f| self.fixed.checked_add(f)) {
            self.fixed = sum;
            return;
        }
        // SAFETY: as above; the numeric is copied into Rust memory.
        let Some(n) = (unsafe {
            if type_oid == pg_sys::NUMERICOID {
                AnyNumeric::from_polymorphic_datum(datum, false, type_oid)
            } else {
                i64::from_polymorphic_datum(datum, false, type_oid).map(AnyNumeric::from)
            }
        }) else {
            return;
        };
        self.other = Some(match self.other.take() {
            Some(sum) => sum + n,
            None => n,
        });
    }

    /// The sum as the nearest double, as `numeric`'s own conversion gives it.
    fn value(self) -> f64 {
        let sign = if self.fixed < 0 { "-" } else { "" };
        let magnitude = self.fixed.unsigned_abs();
        let scale = FIXED_SCALE as u128;
        let fixed = format!("{sign}{}.{:016}", magnitude / scale, magnitude % scale);
        match self.other {
            // Both round the same decimal value to the nearest double.
            None => fixed.parse().unwrap_or(f64::NAN),
            Some(other) => AnyNumeric::try_from(fixed.as_str())
                .map(|f| f + other)
                .ok()
                .and_then(|n| f64::try_from(n).ok())
                .unwrap_or(f64::NAN),
        }
    }
}

/// A finite numeric with at most 16 decimals, in units of 10^-16; None for any other (the
/// caller adds it as a numeric). Reads PostgreSQL's packed format: a 16-bit header (short:
/// sign, display scale and a 6-bit weight; long: sign and display scale, then a 16-bit
/// weight), then base-10000 digits, the first worth 10000^weight.
///
/// # Safety
/// `datum` is a non-null numeric.
unsafe fn numeric_as_fixed(datum: pg_sys::Datum) -> Option<i128> {
    // SAFETY: as the function's contract says; a packed copy is made only if it is toasted.
    let bytes = unsafe {
        let packed = pg_sys::pg_detoast_datum_packed(datum.cast_mut_ptr());
        pgrx::varlena::varlena_to_byte_slice(packed)
    };
    let word = |at: usize| -> Option<u16> {
        bytes
            .get(at..at + 2)
            .map(|b| u16::from_ne_bytes([b[0], b[1]]))
    };
    let header = word(0)?;
    let (negative, weight, digits_at) = match header & 0xC000 {
        // Short.
        0x8000 => {
            let weight = (header & 0x003F) as i32;
            let weight = if header & 0x0040 != 0 {
                weight - 64
            } else {
                weight
            };
            (header & 0x2000 != 0, weight, 2)
        }
        0x0000 => (false, i32::from(word(2)? as i16), 4),
        0x4000 => (true, i32::from(word(2)? as i16), 4),
        // NaN and the infinities.
        _ => return None,
    };
    let mut total: i128 = 0;
    for (i, at) in (digits_at..bytes.len()).step_by(2).enumerate() {
        let digit = i128::from(word(at)?);
        if digit == 0 {
            continue;
        }
        // Digit i is worth 10000^(weight - i), so 10000^(weight - i + 4) units.
        let power = u32::try_from(weight - i as i32 + 4).ok()?;
        total = total.checked_add(digit.checked_mul(10_000i128.checked_pow(power)?)?)?;
    }
    Some(if negative { -total } else { total })
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

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;
    use pgrx::AnyNumeric;

    use super::Total;

    /// `Total` over `values` (numeric literals) against PostgreSQL's own sum, as a double;
    /// true when every value was added in fixed point.
    fn agrees(values: &[&str]) -> bool {
        let mut total = Total::default();
        for v in values {
            let n = AnyNumeric::try_from(*v).unwrap();
            total.add(n.into_datum(), pg_sys::NUMERICOID);
        }
        let list = values
            .iter()
            .map(|v| format!("('{v}'::numeric)"))
            .collect::<Vec<_>>();
        let expected = Spi::get_one::<f64>(&format!(
            "SELECT sum(x)::float8 FROM (VALUES {}) AS v (x)",
            list.join(", ")
        ))
        .unwrap()
        .unwrap();
        let fixed_only = total.other.is_none();
        let got = total.value();
        assert!(
            got == expected || (got.is_nan() && expected.is_nan()),
            "{values:?}: {got} against {expected}"
        );
        fixed_only
    }

    #[pg_test]
    fn totals_match_numeric_sums() {
        assert!(agrees(&["1", "2", "3"]));
        assert!(agrees(&["0"]));
        assert!(agrees(&["-5", "2.5", "0.0001"]));
        assert!(agrees(&["1.5", "-0.25", "123456789012.123456"]));
        assert!(agrees(&["0.1", "0.2"]));
        // 16 decimals fit the fixed point; 17 go through numeric.
        assert!(agrees(&["0.0000000000000001", "1"]));
        assert!(!agrees(&["0.00000000000000001", "3", "0.1"]));
        // Large: beyond the fixed point's range, and the long format (weight > 63).
        assert!(agrees(&["1e21", "1e21", "7"]));
        assert!(!agrees(&["1e300", "-1", "2.5"]));
        assert!(agrees(&["99999999999999999999.9999", "0.0001"]));
        // A display scale over 63 takes the long format; its digits still fit.
        let long = format!("-1.{}", "0".repeat(70));
        assert!(agrees(&[&long, "2"]));
        assert!(agrees(&["-1e12", "-1e12", "-0.5"]));
        assert!(!agrees(&["NaN", "1"]));
        // Bigints through the same path.
        let mut total = Total::default();
        total.add(9_007_199_254_740_993i64.into_datum(), pg_sys::INT8OID);
        total.add(1i64.into_datum(), pg_sys::INT8OID);
        assert_eq!(total.value(), 9_007_199_254_740_994f64);
    }
}
