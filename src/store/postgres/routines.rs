//! Write transactions that run as one PL/pgSQL function call: one round trip for the whole
//! transaction, commit included. Two do: an ingest batch (`super::ingest`) and a completion of
//! successes only (`super::complete`).
//!
//! **Why.** The ingest batch takes its conversations' locks in one statement and writes in the
//! next (a statement reads with the snapshot it started with, so the write must start after
//! the locks are held). Sent one by one, with `BEGIN` and `COMMIT`, that is four round trips,
//! and between them the backend sits idle in its transaction, holding the locks, until
//! botlinkd's runtime gets to sending the next statement. On a busy machine that wait was as
//! long as the statements themselves, and every other writer of those conversations waited
//! with it. As a function called outside any transaction block, the call is its own
//! transaction: the locks, then the write (a `VOLATILE` PL/pgSQL function takes a fresh
//! snapshot for each statement, so the write sees the previous lock holder's rows), then the
//! commit, before the one answer goes back.
//!
//! **How they get there.** A routine's text is built from the same Rust constants as the
//! statements it stands for (all of ingest's; the completion's attempts, locks and promotion,
//! see `super::complete`), and its name ends in a hash of that text
//! (`botlinkd_ingest_3f2a…`). [`install`] creates the routines of this build when the store
//! opens, under the migration lock, if they are not there yet. A new build with a changed
//! statement so gets a function of its own, and processes of two builds can share one
//! database during a rolling upgrade; a function no build uses any more is a few kilobytes
//! of catalogue and is left alone.
//!
//! Inside, statements are planned as in `super::begin_hot` (the function's own `SET`s) and
//! PL/pgSQL keeps each plan for the connection's life. Parameters are the statements' `$n`,
//! so a shared text is the very one the statement would have sent; `#variable_conflict
//! use_column` lets the result's column names match the tables'.

use sha2::{Digest, Sha256};

use crate::store::StoreResult;

/// A function this build calls: its name and the `CREATE` statement that makes it.
pub(super) struct Routine {
    /// The function's name, with the hash of its definition.
    pub name: String,
    create: String,
}

impl Routine {
    /// A `VOLATILE` PL/pgSQL function `<prefix>_<hash>(arguments) RETURNS TABLE (returns)`
    /// whose body is `body` (PL/pgSQL statements; they reach the arguments as `$1`, `$2`, …)
    /// with the local variables `variables` (`name TYPE;` each, or nothing), planned as the
    /// delivery path's statements are.
    pub(super) fn new(prefix: &str, arguments: &str, returns: &str, variables: &str, body: &str) -> Self {
        let declare = if variables.is_empty() {
            String::new()
        } else {
            format!("DECLARE {variables} ")
        };
        let signature = format!(
            "({arguments}) RETURNS TABLE ({returns}) LANGUAGE plpgsql VOLATILE \
             SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $routine$ \
             #variable_conflict use_column\n{declare}BEGIN {body} END $routine$"
        );
        let hash = Sha256::digest(signature.as_bytes());
        // The first 48 bits of the hash, as 12 hex digits.
        let short = hash[..6].iter().fold(0u64, |n, byte| n << 8 | u64::from(*byte));
        let name = format!("{prefix}_{short:012x}");
        let create = format!("CREATE OR REPLACE FUNCTION {name} {signature}");
        Self { name, create }
    }

    /// `SELECT * FROM name($1, …, $n)`: the call, for `n` arguments.
    pub(super) fn call(&self, n: usize) -> String {
        let arguments: Vec<String> = (1..=n).map(|i| format!("${i}")).collect();
        format!("SELECT * FROM {}({})", self.name, arguments.join(", "))
    }
}

/// Every routine of this build.
fn all() -> [&'static Routine; 2] {
    [&*super::ingest::ROUTINE, &*super::complete::ROUTINE]
}

/// Whether a call failed because its routine does not exist (SQLSTATE 42883).
pub(super) fn is_missing(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| e.code().as_deref() == Some("42883"))
}

/// Creates this build's missing routines again, under the migration lock.
pub(super) async fn reinstall(pool: &sqlx::PgPool) -> StoreResult<()> {
    let mut tx = pool.begin().await?;
    super::open::lock_migrations(&mut tx).await?;
    install(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Creates this build's routines that the database lacks. Call it holding the migration
/// lock, so that two processes starting together do not both create one.
pub(super) async fn install(tx: &mut sqlx::PgConnection) -> StoreResult<()> {
    for routine in all() {
        // Looked up as a call finds it: through the connection's search path.
        let present: bool = sqlx::query_scalar("SELECT to_regproc($1) IS NOT NULL")
            .bind(&routine.name)
            .fetch_one(&mut *tx)
            .await?;
        if !present {
            // One statement, no parameters (the `$n` are inside the body's quotes); not kept
            // as a prepared statement.
            sqlx::query(&routine.create).persistent(false).execute(&mut *tx).await?;
            tracing::info!(routine = %routine.name, "created postgres routine");
        }
    }
    Ok(())
}

/// Readies a new connection for the write path, before a customer's message waits on it: calls
/// each routine with an empty batch in a transaction that is rolled back, so the backend has
/// read the tables' definitions, compiled the routines and planned their statements (all but
/// the completion's move of followers, which an empty batch skips), and the connection holds
/// the prepared calls. On a cold connection the first call of each took 4 to 20 ms where a
/// warm one takes 1 to 3 (docs/perf-log.md). The ingest call comes last: it takes a
/// transaction id (its answer names it), which holds back feed readers until the rollback.
/// A routine that is missing (dropped by hand) is left to the next write, which makes it
/// again; only a broken connection is an error.
pub(super) async fn warm_up(connection: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let mut tx = connection.begin().await?;
    let called = match super::complete::call_empty(&mut tx).await {
        Ok(()) => super::ingest::call_empty(&mut tx).await,
        failed => failed,
    };
    tx.rollback().await?;
    match called {
        Err(error) if is_missing(&error) => {
            tracing::debug!(error = %error, "postgres connection not warmed up: a routine is missing")
        }
        Err(error) => tracing::warn!(error = %error, "postgres connection not warmed up"),
        Ok(()) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_routine_is_named_by_its_definition_and_called_with_every_argument() {
        let a = Routine::new("botlinkd_test", "INT8", "x INT8", "", "RETURN QUERY SELECT $1;");
        let b = Routine::new("botlinkd_test", "INT8", "x INT8", "", "RETURN QUERY SELECT $1 + 1;");
        let c = Routine::new(
            "botlinkd_test",
            "INT8",
            "x INT8",
            "y INT8;",
            "y := $1; RETURN QUERY SELECT y;",
        );
        assert!(a.name.starts_with("botlinkd_test_") && a.name.len() == "botlinkd_test_".len() + 12);
        assert_ne!(a.name, b.name);
        assert_eq!(a.call(2), format!("SELECT * FROM {}($1, $2)", a.name));
        assert!(a.create.contains("#variable_conflict use_column"));
        assert!(!a.create.contains("DECLARE") && c.create.contains("DECLARE y INT8; BEGIN"));
    }
}
