//! Which statements seam runs: the one allow-list of the HTTP API and the PostgreSQL listener.
//!
//! Takes a parsed statement (before anything is planned: planning `COPY` or `CREATE EXTERNAL
//! TABLE` already looks at files) and, once planned, its logical plan; gives what kind of
//! statement it is ([`Kind`]) or why it is refused. Reads (`SELECT`, `WITH`, `VALUES`,
//! `EXPLAIN [ANALYZE]` of a read, `DESCRIBE`, `SHOW TABLES`/`COLUMNS`) are planned, and the plan
//! is checked again ([`check_plan`]: no DDL, DML or statement node anywhere, and no admin-only
//! table for a principal without the admin role, through `EXPLAIN`, `EXPLAIN ANALYZE`,
//! subqueries and views). `SHOW` of a setting reads no table. Session statements (`SET`,
//! transactions, `DISCARD`) are answered without effect by the PostgreSQL listener and refused
//! over HTTP. Cursors (`DECLARE`, `FETCH`, `CLOSE`) are not supported (SQLSTATE 0A000): results
//! are streamed, so a client has no need of them. Everything else is refused as a write.

use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SQLOptions;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement;
use seam_auth::Principal;

use crate::audit::check_access;
use crate::error::QueryError;

/// What an allowed statement is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Reads tables: planned, checked with [`check_plan`], run.
    Read,
    /// `SHOW` of a setting or of the catalogs (the PostgreSQL listener answers the settings
    /// clients probe itself; the rest is planned and checked like a read).
    Show,
    /// A session statement; see [`Session`].
    Session(Session),
}

/// Session statements: answered without effect over PostgreSQL, refused over HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// `SET`: accepted and ignored, so one client cannot change another's session.
    Set,
    /// `BEGIN`, `START TRANSACTION`, `COMMIT`, `ROLLBACK`: no-ops (there is nothing to write).
    Transaction,
    /// `DISCARD`: nothing to discard.
    Discard,
}

/// The first two words of a statement, upper case (`DROP TABLE`, `INSERT INTO`).
pub fn verb(s: &impl std::fmt::Display) -> String {
    let text = s.to_string();
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase()
}

fn refused(s: &impl std::fmt::Display) -> QueryError {
    QueryError::Refused(format!(
        "{} statements are not allowed; only queries are",
        verb(s)
    ))
}

/// Classifies a statement as the SQL parser gave it.
///
/// # Errors
/// [`QueryError::Refused`] for anything that is not a read or a session statement,
/// [`QueryError::Unsupported`] for cursors.
pub fn classify(s: &Statement) -> Result<Kind, QueryError> {
    match s {
        Statement::Query(_)
        | Statement::ExplainTable { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. } => Ok(Kind::Read),
        Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::ShowSchemas { .. } => Ok(Kind::Show),
        Statement::Explain { statement, .. } => match classify(statement)? {
            Kind::Read | Kind::Show => Ok(Kind::Read),
            Kind::Session(_) => Err(refused(statement)),
        },
        Statement::Set(_) => Ok(Kind::Session(Session::Set)),
        Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. } => Ok(Kind::Session(Session::Transaction)),
        Statement::Discard { .. } => Ok(Kind::Session(Session::Discard)),
        Statement::Declare { .. } | Statement::Fetch { .. } | Statement::Close { .. } => {
            Err(QueryError::Unsupported(
                "cursors (DECLARE, FETCH, CLOSE) are not supported: run the query itself, \
                 its rows are streamed"
                    .into(),
            ))
        }
        other => Err(refused(other)),
    }
}

/// Classifies a statement as DataFusion's parser gave it (the HTTP API), where session
/// statements are refused: an HTTP request has no session.
///
/// # Errors
/// As [`classify`]; [`QueryError::Refused`] also for session statements, `COPY`,
/// `CREATE EXTERNAL TABLE` and `RESET`.
pub fn classify_http(s: &DfStatement) -> Result<Kind, QueryError> {
    let kind = match s {
        DfStatement::Statement(s) => classify(s)?,
        DfStatement::Explain(e) => match classify_http(&e.statement)? {
            Kind::Read | Kind::Show => Kind::Read,
            Kind::Session(_) => return Err(refused(&e.statement)),
        },
        DfStatement::CreateExternalTable(_) => {
            return Err(QueryError::Refused(
                "CREATE EXTERNAL TABLE is not allowed".into(),
            ));
        }
        DfStatement::CopyTo(_) => return Err(QueryError::Refused("COPY is not allowed".into())),
        DfStatement::Reset(_) => return Err(QueryError::Refused("RESET is not allowed".into())),
    };
    match kind {
        Kind::Session(_) => Err(refused(s)),
        k => Ok(k),
    }
}

/// Checks a planned statement: nothing in it (an `EXPLAIN`'s plan, subqueries included)
/// defines or changes data or the session, and it reads no table `principal` may not read.
///
/// # Errors
/// [`QueryError::Refused`] or [`QueryError::Forbidden`].
pub fn check_plan(plan: &LogicalPlan, principal: &Principal) -> Result<(), QueryError> {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(plan)
        .map_err(|e| QueryError::Refused(e.strip_backtrace()))?;
    check_access(plan, principal)
}

#[cfg(test)]
mod tests {
    use datafusion::sql::parser::DFParser;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    use super::*;

    fn pg(sql: &str) -> Result<Kind, QueryError> {
        let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        classify(&statements[0])
    }

    fn http(sql: &str) -> Result<Kind, QueryError> {
        let statement = DFParser::parse_sql(sql).unwrap().pop_front().unwrap();
        classify_http(&statement)
    }

    #[test]
    fn one_list_for_both_protocols() {
        for sql in [
            "SELECT 1",
            "WITH a AS (SELECT 1) SELECT * FROM a",
            "EXPLAIN SELECT 1",
            "EXPLAIN ANALYZE SELECT 1",
            "SHOW TABLES",
        ] {
            assert_eq!(pg(sql).unwrap(), Kind::Read, "{sql}");
            assert_eq!(http(sql).unwrap(), Kind::Read, "{sql}");
        }
        for sql in [
            "DECLARE c CURSOR FOR SELECT * FROM seam_audit",
            "DECLARE c CURSOR FOR INSERT INTO spans SELECT * FROM spans",
            "FETCH 5 FROM c",
            "CLOSE c",
        ] {
            let e = pg(sql).unwrap_err();
            assert_eq!(e.sqlstate(), "0A000", "{sql}: {e}");
        }
        for sql in [
            "INSERT INTO spans SELECT * FROM spans",
            "DROP TABLE spans",
            "EXPLAIN INSERT INTO spans SELECT * FROM spans",
            "EXPLAIN ANALYZE DELETE FROM spans",
            "PREPARE p AS SELECT 1",
        ] {
            assert!(
                matches!(pg(sql), Err(QueryError::Refused(_))),
                "{sql}: {:?}",
                pg(sql)
            );
        }
        assert_eq!(pg("SET x = 1").unwrap(), Kind::Session(Session::Set));
        assert_eq!(pg("BEGIN").unwrap(), Kind::Session(Session::Transaction));
        assert!(matches!(http("SET x = 1"), Err(QueryError::Refused(_))));
        assert!(matches!(
            http("COPY (SELECT 1) TO '/tmp/x'"),
            Err(QueryError::Refused(_))
        ));
        assert!(matches!(
            http("EXPLAIN COPY (SELECT 1) TO '/tmp/x'"),
            Err(QueryError::Refused(_))
        ));
    }
}
