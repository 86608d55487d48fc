//! The query runtime: the threads statements run on, apart from ingest and the listeners.
//!
//! Takes futures that plan and run statements; gives them a tokio runtime of their own
//! ([`QueryRuntime`], `query.threads` workers), so a statement that keeps its threads busy
//! cannot hold up an OTLP export. The caller waits on its own runtime: time limits are kept
//! there, and a statement past its limit is aborted ([`Task`] aborts its task when dropped;
//! DataFusion's operators yield to the runtime between batches, so the abort takes effect at
//! the next batch). A panic inside a statement becomes [`QueryError::Internal`].

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::runtime::Handle;
use tokio::task::{JoinError, JoinHandle};

use crate::error::QueryError;

/// A multi-thread tokio runtime for statements; shut down in the background when dropped
/// (dropping a runtime from async code would panic).
#[derive(Debug)]
pub struct QueryRuntime {
    runtime: Option<tokio::runtime::Runtime>,
    handle: Handle,
}

impl QueryRuntime {
    /// A runtime with `threads` workers (0: half the CPUs, at least one, so that ingest
    /// always keeps the rest).
    ///
    /// # Errors
    /// When the operating system refuses the threads.
    pub fn new(threads: usize) -> Result<Self, QueryError> {
        let threads = if threads == 0 {
            (std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get) / 2).max(1)
        } else {
            threads
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .max_blocking_threads(64)
            .thread_name("seam-query")
            .enable_all()
            .build()
            .map_err(|e| QueryError::Internal(format!("cannot start the query runtime: {e}")))?;
        let handle = runtime.handle().clone();
        Ok(Self {
            runtime: Some(runtime),
            handle,
        })
    }

    /// Where to spawn statement work.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A task on the query runtime, aborted when dropped (a statement past its time limit, a
/// client that went away).
#[derive(Debug)]
pub struct Task<T> {
    handle: Option<JoinHandle<T>>,
}

impl<T: Send + 'static> Task<T> {
    /// Spawns `work` on `runtime`.
    pub fn spawn(runtime: &Handle, work: impl Future<Output = T> + Send + 'static) -> Self {
        Self {
            handle: Some(runtime.spawn(work)),
        }
    }

    /// Waits for the task's output; a panic becomes [`QueryError::Internal`].
    ///
    /// # Errors
    /// The task panicked, was aborted, or was already joined.
    pub async fn join(&mut self) -> Result<T, QueryError> {
        let Some(handle) = self.handle.as_mut() else {
            return Err(QueryError::Internal(
                "the query task has already ended".into(),
            ));
        };
        let joined = handle.await;
        self.handle = None;
        joined.map_err(join_error)
    }

    /// Aborts the task (it stops at its next yield).
    pub fn abort(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        if let Some(h) = &self.handle {
            h.abort();
        }
    }
}

/// The message of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// A failed task as a query error.
pub fn join_error(e: JoinError) -> QueryError {
    if e.is_panic() {
        let payload = e.into_panic();
        QueryError::Internal(format!(
            "the statement failed inside seam ({}); seam keeps serving",
            panic_message(payload.as_ref())
        ))
    } else {
        QueryError::Internal("the statement was cancelled: seam is stopping".into())
    }
}

/// Polls a future with the query runtime as the current runtime, so that the tasks it spawns
/// (DataFusion runs each partition of a plan in a task of its own) run there, while the
/// future itself stays where it is (a PostgreSQL connection, which it borrows).
pub struct InRuntime<F> {
    handle: Handle,
    future: Pin<Box<F>>,
}

impl<F> std::fmt::Debug for InRuntime<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InRuntime").finish_non_exhaustive()
    }
}

impl<F: Future> InRuntime<F> {
    /// `future`, polled inside `handle`'s runtime.
    pub fn new(handle: Handle, future: F) -> Self {
        Self {
            handle,
            future: Box::pin(future),
        }
    }
}

impl<F: Future> Future for InRuntime<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let _entered = this.handle.enter();
        this.future.as_mut().poll(cx)
    }
}

/// A physical optimizer rule that makes every join yield to the runtime between output
/// batches (DataFusion's `CooperativeExec` above it).
///
/// DataFusion's own rule makes leaves and exchanges cooperative, which is enough when data
/// flows in as fast as it is used. A join multiplies rows: a nested-loop or cross join can
/// produce billions of rows from two small inputs, each output batch handed straight to an
/// aggregate that polls again at once, so the task never yields and an abort (time limit,
/// client gone) would wait for the whole join. Above each join, every output batch spends
/// task budget, so the task yields every 128 batches and an abort lands within a batch.
#[derive(Debug, Default)]
pub struct CooperativeJoins;

impl datafusion::physical_optimizer::PhysicalOptimizerRule for CooperativeJoins {
    fn optimize(
        &self,
        plan: std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>,
        _config: &datafusion::config::ConfigOptions,
    ) -> datafusion::error::Result<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>>
    {
        use datafusion::common::tree_node::{Transformed, TreeNode as _};
        use datafusion::physical_plan::ExecutionPlan;
        use datafusion::physical_plan::coop::CooperativeExec;
        plan.transform_up(|p| {
            if p.name().contains("Join") {
                let wrapped: std::sync::Arc<dyn ExecutionPlan> =
                    std::sync::Arc::new(CooperativeExec::new(p));
                Ok(Transformed::yes(wrapped))
            } else {
                Ok(Transformed::no(p))
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "seam_cooperative_joins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
