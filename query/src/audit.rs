//! The audit trail of seam's own use: who ran which statement, from where, with what result.
//!
//! Takes the principal, protocol, client address and SQL of each statement, and its outcome;
//! gives [`AuditEvent`]s to the [`AuditSink`] the server installs (which writes them to the
//! `seam_audit` table through the write-ahead log). Also decides who may read admin-only
//! tables ([`check_access`]).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::LogicalPlan;
use seam_auth::{Principal, Role};
pub use seam_schemas::tables::seam_audit::AuditEvent;

use crate::error::QueryError;

/// Where audit events go.
pub trait AuditSink: Send + Sync + std::fmt::Debug {
    /// Records one event (must not block: the server queues it for the log).
    fn record(&self, event: AuditEvent);
}

/// The admin-only tables `plan` reads, when `principal` may not: refused. The whole plan is
/// looked at: subqueries, the plan an `EXPLAIN` or `EXPLAIN ANALYZE` shows (`ANALYZE` runs it
/// and prints row counts), and the plans of the views it reads.
///
/// # Errors
/// [`QueryError::Forbidden`] naming the table.
pub fn check_access(plan: &LogicalPlan, principal: &Principal) -> Result<(), QueryError> {
    if principal.may(Role::Admin) {
        return Ok(());
    }
    match admin_only_table(plan) {
        Some(t) => Err(QueryError::Forbidden(format!(
            "permission denied for table {t}: {} lacks the admin role",
            principal.name
        ))),
        None => Ok(()),
    }
}

/// The first admin-only table `plan` reads, views and subqueries included.
fn admin_only_table(plan: &LogicalPlan) -> Option<String> {
    let mut denied: Option<String> = None;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let name = scan.table_name.table();
            if seam_schemas::tables::is_admin_only(name) {
                denied = Some(name.to_string());
                return Ok(TreeNodeRecursion::Stop);
            }
            if let Some(view) = scan.source.get_logical_plan()
                && let Some(t) = admin_only_table(&view)
            {
                denied = Some(t);
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    denied
}

fn epoch_ns(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// One statement being audited: created when it starts, finished with its outcome.
#[derive(Debug)]
pub struct AuditScope {
    sink: Option<Arc<dyn AuditSink>>,
    event: AuditEvent,
    started: Instant,
}

impl AuditScope {
    /// Starts auditing `statement` run by `principal` over `protocol` from `client_addr`.
    pub fn start(
        sink: Option<Arc<dyn AuditSink>>,
        action: &str,
        principal: &Principal,
        protocol: &str,
        client_addr: Option<String>,
        statement: Option<String>,
    ) -> Self {
        Self {
            sink,
            event: AuditEvent {
                time_ns: epoch_ns(SystemTime::now()),
                action: action.to_string(),
                principal: principal.name.clone(),
                roles: principal.roles_text(),
                auth_method: principal.method.as_str().to_string(),
                protocol: protocol.to_string(),
                client_addr,
                statement,
                ..Default::default()
            },
            started: Instant::now(),
        }
    }

    /// Records the outcome (`ok`, `error`, `refused`, `cancelled`, `unauthenticated`).
    pub fn finish(mut self, outcome: &str, rows: Option<i64>, error: Option<String>) {
        self.event.duration_ms = self.started.elapsed().as_secs_f64() * 1e3;
        self.event.outcome = outcome.to_string();
        self.event.rows = rows;
        self.event.error = error;
        if let Some(sink) = &self.sink {
            sink.record(self.event);
        }
    }

    /// Records a query error.
    pub fn finish_err(self, e: &QueryError) {
        let outcome = match e {
            QueryError::Refused(_) | QueryError::Forbidden(_) => "refused",
            _ => "error",
        };
        self.finish(outcome, None, Some(e.to_string()));
    }
}
