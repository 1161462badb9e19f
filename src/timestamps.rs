//! `update_updated_at_column()`: the BEFORE UPDATE trigger on every table with `updated_at`.
use pgrx::prelude::*;

/// Sets `NEW.updated_at` to the transaction timestamp, like `now()` would.
#[pg_trigger]
pub fn update_updated_at_column<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, impl WhoAllocated>>, pgrx::datum::TryFromDatumError> {
    let Some(new) = trigger.new() else {
        crate::errors::invalid_parameter(
            "update_updated_at_column() must be a row-level UPDATE trigger",
        )
    };
    let mut new = new.into_owned();
    new.set_by_name("updated_at", pgrx::datetime::transaction_timestamp())?;
    Ok(Some(new))
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn updated_at_moves_forward_on_update() {
        Spi::run("INSERT INTO auth.users (id, email) VALUES ('00000000-0000-0000-0000-0000000000a1', 'ts@example.com')").unwrap();
        Spi::run("UPDATE users SET updated_at = '2000-01-01' WHERE id = '00000000-0000-0000-0000-0000000000a1'").unwrap();
        // The trigger overrides whatever the statement set.
        let stale = Spi::get_one::<bool>(
            "SELECT updated_at = now() FROM users WHERE id = '00000000-0000-0000-0000-0000000000a1'",
        )
        .unwrap();
        assert_eq!(stale, Some(true));
    }
}
