//! The `file` pulled source: log files on this machine (on-premises Mule runtimes, APIM
//! self-hosted gateways, OpenTelemetry file exporters), followed like `tail -F` with
//! seam's exactly-once promise.
//!
//! ```text
//!  every poll_interval: glob(paths) − exclude ─▶ files by device:inode (+ fingerprint)
//!  each round, oldest change first, ≤ max_batch_bytes per file:
//!    read from the offset ─▶ cut at a line / entry end ─▶ deliver(text, position) ─▶ commit
//! ```
//!
//! - **Identity.** A file is its `device:inode` (the position key, links followed) plus a
//!   fingerprint of its first 256 bytes and one of the last (up to) 256 bytes taken, kept in
//!   the position's detail with its path and line number, so a reused inode (another file)
//!   is read from its start.
//! - **Rotation.** Renamed files keep their identity: one renamed to a name the patterns
//!   still match is not read again, one renamed (or deleted) out of them is read to its end
//!   through the handle kept open, then dropped. Copy-truncate and any truncation are
//!   detected (shorter than the offset, the first bytes changed, or the bytes before the
//!   offset are not those taken: checked at start and whenever a file changed, with one
//!   read of at most 256 bytes), reported, and the file is read again from its start.
//! - **New files** are looked for every `poll_interval`, also between the steps of a long
//!   round. A file created and gone within one `poll_interval` (plus one step) under heavy
//!   ingest can be missed only when it no longer has a name the patterns match when seam
//!   looks: one rotated to a matching name (`app.log.1` with `app.log*`) is found under it;
//!   one deleted, or renamed out of the patterns, before any scan saw it is not.
//! - **Open files.** At most 256 handles per source: a file that needs one when there is no
//!   room (none read to its end, none old, to close) waits its turn, still followed and
//!   counted in the lag. A scan whose listing failed (a directory that cannot be read, too
//!   many open files) does not take the files it did not find for gone.
//! - **Multi-line entries.** For Mule logs (and `auto`) a text ends before the last line that
//!   starts an entry while the file may still grow; a stack trace at the end of a file waits
//!   for the next entry, or for `multiline_timeout` without growth. A line without its
//!   newline waits the same way. A line longer than `max_batch_bytes` is taken in pieces.
//! - **Gzip.** `*.gz` files are decompressed as a stream in steps of at most
//!   `max_batch_bytes`, once: the offset counts decompressed bytes, and a finished one is
//!   stored `done` and never read again.
//! - **Exactly once.** Each step is one file's text with its position, stored in one
//!   write-ahead log entry; the file's offset moves only once that is durable.
//! - **Fair.** One step per file per round, so a busy file does not starve the others.

mod cut;
mod identity;
mod read;
mod track;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::pull::config::FileSource;
use super::pull::{Position, Pulled, SourceCtx, Stopped};
use track::{Settings, Step, Take, Tracker};

/// Most problems named in one status message.
const MAX_REPORTED: usize = 5;

/// Runs `f` on the tracker on the blocking pool (file I/O), handing the tracker back.
///
/// # Errors
/// `f` panicked: the tracker is lost (rebuild it from the stored positions).
async fn blocking<R, F>(mut tracker: Box<Tracker>, f: F) -> Result<(Box<Tracker>, R), String>
where
    R: Send + 'static,
    F: FnOnce(&mut Tracker) -> R + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let r = f(&mut tracker);
        (tracker, r)
    })
    .await
    .map_err(|e| format!("the file reader failed and starts again from the stored positions: {e}"))
}

/// Looks for files ([`Tracker::scan`]) on the blocking pool: the tracker (rebuilt from
/// `durable` when the scan panicked) and the scan's problems.
async fn scan(
    tracker: Box<Tracker>,
    settings: &Settings,
    durable: &HashMap<String, Position>,
) -> (Box<Tracker>, Vec<String>) {
    match blocking(tracker, Tracker::scan).await {
        Ok(out) => out,
        Err(e) => (
            Box::new(Tracker::new(settings.clone(), durable.clone())),
            vec![e],
        ),
    }
}

/// The problems of one poll as one status message.
fn summary(errors: &[String]) -> String {
    let mut s = errors
        .iter()
        .take(MAX_REPORTED)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if errors.len() > MAX_REPORTED {
        let _ = write!(
            s,
            "; and {} more",
            errors.len().saturating_sub(MAX_REPORTED)
        );
    }
    s
}

/// One take as a [`Pulled`] input, with what to commit once it is stored.
fn pulled(take: Take) -> (Pulled, Position, track::Commit, bool) {
    let Take {
        text,
        origin,
        first_line,
        records,
        bytes,
        position,
        more,
        commit,
    } = take;
    let p = Pulled {
        text,
        origin,
        first_line,
        positions: vec![(position.clone(), records, bytes)],
        format: None,
    };
    (p, position, commit, more)
}

/// Follows the files `cfg.paths` match (less `cfg.exclude`) until seam stops, delivering
/// their lines with the position after them, from the stored positions on.
///
/// Never returns early: unreadable files, glob and I/O errors are reported in the source's
/// status (`read`) and retried at the next poll; the other files go on.
pub async fn run(ctx: SourceCtx, cfg: FileSource) -> Stopped {
    let settings = Settings::new(&cfg);
    // The newest stored positions: loaded at start, then as delivered. A tracker lost to a
    // panic is rebuilt from them.
    let mut durable: HashMap<String, Position> = ctx.positions().clone();
    let mut tracker = Box::new(Tracker::new(settings.clone(), durable.clone()));
    let mut last_scan: Option<Instant> = None;
    // The last scan's problems (an unreadable file, a directory that cannot be listed) stand
    // until the next scan, so that the status says so and the log says it once.
    let mut scan_errors: Vec<String> = Vec::new();
    let mut told_empty = false;
    loop {
        if ctx.stopping() {
            return Stopped;
        }
        let mut scanned = last_scan.is_none_or(|t| t.elapsed() >= cfg.poll_interval);
        if scanned {
            last_scan = Some(Instant::now());
            (tracker, scan_errors) = scan(tracker, &settings, &durable).await;
            if tracker.followed() == 0 && scan_errors.is_empty() && !told_empty {
                told_empty = true;
                tracing::info!(source = ctx.name(), paths = ?cfg.paths, "No file matches the source's paths yet; looking again at every poll.");
            }
        }
        // Problems of this round's steps (truncations, read errors).
        let mut errors: Vec<String> = Vec::new();
        // One round: each file once, oldest change first.
        let keys: Arc<[String]> = tracker.order().into();
        let mut from = 0usize;
        let mut more = false;
        while from < keys.len() {
            if ctx.stopping() {
                return Stopped;
            }
            // A long round (much to read) still looks for new files every poll_interval,
            // so that one created and rotated meanwhile is found while it has a name. The
            // files found are read from the next round on.
            if last_scan.is_none_or(|t| t.elapsed() >= cfg.poll_interval) {
                last_scan = Some(Instant::now());
                scanned = true;
                (tracker, scan_errors) = scan(tracker, &settings, &durable).await;
            }
            let ks = Arc::clone(&keys);
            let r = blocking(tracker, move |t| {
                let mut e = Vec::new();
                let (i, step) = t.next(&ks, from, &mut e);
                (i, step, e)
            })
            .await;
            let (at, step, e) = match r {
                Ok((t, out)) => {
                    tracker = t;
                    out
                }
                Err(e) => {
                    errors.push(e);
                    tracker = Box::new(Tracker::new(settings.clone(), durable.clone()));
                    break;
                }
            };
            errors.extend(e);
            match step {
                Step::Nothing | Step::Dropped => {}
                Step::Take(take) => {
                    let (p, position, commit, m) = pulled(take);
                    if ctx.deliver(p).await.is_err() {
                        return Stopped;
                    }
                    durable.insert(position.key.clone(), position);
                    tracker.commit(&commit);
                    more |= m;
                }
                Step::Save { position, commit } => {
                    if ctx.save_positions(vec![position.clone()]).await.is_err() {
                        return Stopped;
                    }
                    durable.insert(position.key.clone(), position);
                    tracker.commit(&commit);
                }
            }
            from = at.saturating_add(1);
        }
        // Deleted files read to their end: their positions are not kept nor rewritten.
        let gone = std::mem::take(&mut tracker.forgotten);
        if !gone.is_empty() {
            if ctx.forget(gone.clone()).await.is_err() {
                return Stopped;
            }
            for k in &gone {
                durable.remove(k);
            }
        }
        let (bytes, oldest) = tracker.lag();
        let seconds = oldest
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        ctx.lag(Some(seconds), None, Some(bytes));
        if errors.is_empty() && scan_errors.is_empty() {
            ctx.ok();
        } else if scanned || !errors.is_empty() {
            // Counted once per scan while a problem lasts, and once per step problem.
            let all: Vec<String> = scan_errors.iter().chain(&errors).cloned().collect();
            ctx.error("read", &summary(&all));
        }
        if !more && ctx.sleep(cfg.poll_interval).await.is_err() {
            return Stopped;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_message_names_the_first_problems() {
        let errors: Vec<String> = (0..8)
            .map(|i| format!("/var/log/{i}.log: denied"))
            .collect();
        let s = summary(&errors);
        assert!(
            s.starts_with("/var/log/0.log: denied; /var/log/1.log: denied"),
            "{s}"
        );
        assert!(s.ends_with("; and 3 more"), "{s}");
        assert_eq!(summary(&errors[..1]), "/var/log/0.log: denied");
    }
}
