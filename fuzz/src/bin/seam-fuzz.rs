//! `seam-fuzz`: runs seam's fuzz targets for a bounded time on the stable toolchain.
//!
//! ```text
//! seam-fuzz [TARGET...] [--seconds N] [--seed N] [--max-len BYTES] [--root DIR]
//! seam-fuzz --replay [TARGET...]
//! ```
//! Without targets, every target runs (each for `--seconds`, default 10). Seeds come from
//! `<root>/corpus/<target>/` and `<root>/regressions/<target>/`; a panicking input is
//! written to `<root>/artifacts/<target>/crash-<hash>` and the exit status is 1. Copy a
//! crash into `regressions/<target>/` once fixed: the replay (`--replay`, and the crate's
//! test) runs every regression input on each build.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use seam_fuzz::{TARGETS, Target, corpus_dirs, read_dir, run, run_one, target};

struct Args {
    targets: Vec<Target>,
    seconds: u64,
    seed: u64,
    max_len: usize,
    root: PathBuf,
    replay: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        targets: Vec::new(),
        seconds: 10,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
        max_len: 64 << 10,
        root: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        replay: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--seconds" => {
                a.seconds = value("--seconds")?
                    .parse()
                    .map_err(|e| format!("--seconds: {e}"))?;
            }
            "--seed" => {
                a.seed = value("--seed")?
                    .parse()
                    .map_err(|e| format!("--seed: {e}"))?
            }
            "--max-len" => {
                a.max_len = value("--max-len")?
                    .parse()
                    .map_err(|e| format!("--max-len: {e}"))?;
            }
            "--root" => a.root = PathBuf::from(value("--root")?),
            "--replay" => a.replay = true,
            "-h" | "--help" => {
                return Err(format!(
                    "usage: seam-fuzz [TARGET...] [--seconds N] [--seed N] [--max-len BYTES] [--root DIR] [--replay]\ntargets: {}",
                    TARGETS
                        .iter()
                        .map(|t| t.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            name => a.targets.push(target(name).ok_or(format!(
                "unknown target {name:?}; targets: {}",
                TARGETS.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
            ))?),
        }
    }
    if a.targets.is_empty() {
        a.targets = TARGETS.to_vec();
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // Panics are findings, reported below; keep the hook from printing each one.
    std::panic::set_hook(Box::new(|_| {}));
    let mut failed = false;
    for t in &args.targets {
        let seeds: Vec<(PathBuf, Vec<u8>)> = corpus_dirs(&args.root, t.name)
            .iter()
            .flat_map(|d| read_dir(d))
            .collect();
        if args.replay {
            for (path, data) in &seeds {
                if let Err(msg) = run_one(*t, data) {
                    println!("{}: {} panics: {msg}", t.name, path.display());
                    failed = true;
                }
            }
            println!("{}: replayed {} inputs", t.name, seeds.len());
            continue;
        }
        let report = run(
            *t,
            seeds.into_iter().map(|(_, d)| d).collect(),
            Duration::from_secs(args.seconds),
            args.seed,
            &args.root.join("artifacts"),
            args.max_len,
        );
        println!(
            "{}: {} inputs in {} s ({:.0}/s), {} outcomes, slowest {} ms, {} crashes (seed {})",
            t.name,
            report.execs,
            args.seconds,
            report.execs as f64 / args.seconds.max(1) as f64,
            report.signatures,
            report.slowest_ms,
            report.crashes.len(),
            args.seed
        );
        for (path, msg) in &report.crashes {
            println!("  crash: {} ({msg})", path.display());
            failed = true;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
