//! `GET /debug/pprof/profile?seconds=N`: Pyrite's own CPU profile, sampled by pprof-rs and
//! served as a gzipped pprof like Go's `net/http/pprof`, so Pyrite can scrape itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use axum::extract::Query;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::proto::google::v1::{Function, Label, Line, Location, Profile, Sample, ValueType};

/// Go's default sampling rate.
const FREQUENCY: i32 = 100;
const MAX_SECONDS: u64 = 300;

static RUNNING: AtomicBool = AtomicBool::new(false);
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Ends profiles in progress early (at shutdown), so a long `seconds` never holds up a stop.
pub fn begin_shutdown() {
    STOPPING.store(true, Ordering::SeqCst);
}

#[derive(Debug, serde::Deserialize)]
pub struct ProfileParams {
    seconds: Option<u64>,
}

pub async fn profile(Query(params): Query<ProfileParams>) -> Response {
    let seconds = params.seconds.unwrap_or(30).clamp(1, MAX_SECONDS);
    if RUNNING.swap(true, Ordering::SeqCst) {
        return (
            StatusCode::CONFLICT,
            "a CPU profile is already being taken; retry when it ends\n",
        )
            .into_response();
    }
    let result = tokio::task::spawn_blocking(move || {
        let result = cpu_profile(Duration::from_secs(seconds));
        RUNNING.store(false, Ordering::SeqCst);
        result
    })
    .await;
    match result {
        Ok(Ok(profile)) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (header::CONTENT_DISPOSITION, "attachment; filename=\"profile\""),
            ],
            crate::pprof::encode_gzip(&profile),
        )
            .into_response(),
        Ok(Err(message)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{message}\n")).into_response(),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("profiling task failed: {err}\n"),
        )
            .into_response(),
    }
}

/// Samples this process for `duration` (blocking) and builds the pprof profile.
fn cpu_profile(duration: Duration) -> Result<Profile, String> {
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(FREQUENCY)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(|err| format!("could not enable CPU profiling: {err}"))?;
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline && !STOPPING.load(Ordering::SeqCst) {
        std::thread::sleep((deadline - Instant::now()).min(Duration::from_millis(100)));
    }
    let report = guard
        .report()
        .build()
        .map_err(|err| format!("building the CPU report: {err}"))?;
    drop(guard);
    let profile = to_profile(&report);
    drop(report);
    // DEBUG: the self-scrape takes one every 15 s. An idle process gets few samples or none:
    // pprof-rs samples on CPU time (SIGPROF), which an idle server hardly spends.
    tracing::debug!(
        stacks = profile.sample.len(),
        seconds = duration.as_secs_f64(),
        "took a CPU profile of this process"
    );
    // Symbolizing parsed the binary's debug info (hundreds of MB with `debug = 1`); backtrace
    // keeps it cached. Drop it: a profile every 15 s must not pin that memory.
    backtrace::clear_symbol_cache();
    // Hand the freed symbolization memory back to the OS now: mimalloc (the global allocator,
    // see lib.rs) would keep this thread's ~250 MiB of freed pages while the thread idles.
    // SAFETY: mi_collect only releases memory the allocator holds free.
    unsafe { libmimalloc_sys::mi_collect(true) };
    Ok(profile)
}

/// The report as Go writes a CPU profile: `samples/count` and `cpu/nanoseconds`, period
/// `cpu/nanoseconds`, one location per resolved symbol (inlined frames included), leaf first,
/// and the thread name as label `thread`.
fn to_profile(report: &pprof::Report) -> Profile {
    let mut builder = Builder::default();
    let period = 1_000_000_000 / i64::from(report.timing.frequency.max(1));
    let samples = builder.string("samples");
    let count = builder.string("count");
    let cpu = builder.string("cpu");
    let nanoseconds = builder.string("nanoseconds");
    let thread = builder.string("thread");
    let mut sample = Vec::with_capacity(report.data.len());
    for (frames, &hits) in &report.data {
        let mut location_id = Vec::new();
        for frame in &frames.frames {
            for symbol in frame {
                location_id.push(builder.location(&symbol.name(), &symbol.filename(), symbol.lineno()));
            }
        }
        let thread_name = builder.string(&frames.thread_name_or_id());
        sample.push(Sample {
            location_id,
            value: vec![hits as i64, hits as i64 * period],
            label: vec![Label {
                key: thread,
                str: thread_name,
                num: 0,
                num_unit: 0,
            }],
        });
    }
    let start = report
        .timing
        .start_time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as i64);
    Profile {
        sample_type: vec![
            ValueType {
                r#type: samples,
                unit: count,
            },
            ValueType {
                r#type: cpu,
                unit: nanoseconds,
            },
        ],
        sample,
        location: builder.locations,
        function: builder.functions,
        string_table: builder.strings,
        time_nanos: start,
        duration_nanos: report.timing.duration.as_nanos() as i64,
        period_type: Some(ValueType {
            r#type: cpu,
            unit: nanoseconds,
        }),
        period,
        ..Profile::default()
    }
}

struct Builder {
    strings: Vec<String>,
    string_index: HashMap<String, i64>,
    functions: Vec<Function>,
    function_index: HashMap<(String, String), u64>,
    locations: Vec<Location>,
    location_index: HashMap<(u64, u32), u64>,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            strings: vec![String::new()],
            string_index: HashMap::from([(String::new(), 0)]),
            functions: Vec::new(),
            function_index: HashMap::new(),
            locations: Vec::new(),
            location_index: HashMap::new(),
        }
    }
}

impl Builder {
    fn string(&mut self, text: &str) -> i64 {
        if let Some(&index) = self.string_index.get(text) {
            return index;
        }
        let index = self.strings.len() as i64;
        self.strings.push(text.to_string());
        self.string_index.insert(text.to_string(), index);
        index
    }

    fn location(&mut self, name: &str, file: &str, line: u32) -> u64 {
        let key = (name.to_string(), file.to_string());
        let function_id = match self.function_index.get(&key) {
            Some(&id) => id,
            None => {
                let id = self.functions.len() as u64 + 1;
                let (name_index, file_index) = (self.string(name), self.string(file));
                self.functions.push(Function {
                    id,
                    name: name_index,
                    system_name: name_index,
                    filename: file_index,
                    start_line: 0,
                });
                self.function_index.insert(key, id);
                id
            }
        };
        *self.location_index.entry((function_id, line)).or_insert_with(|| {
            let id = self.locations.len() as u64 + 1;
            self.locations.push(Location {
                id,
                mapping_id: 0,
                address: 0,
                line: vec![Line {
                    function_id,
                    line: i64::from(line),
                    column: 0,
                }],
                is_folded: false,
            });
            id
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_profile_is_a_valid_pprof() {
        // pprof-rs initializes lazily (slow in a debug build): burn until the profile is done.
        let profiler = std::thread::spawn(|| cpu_profile(Duration::from_millis(500)).unwrap());
        let mut x = 0u64;
        while !profiler.is_finished() {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        std::hint::black_box(x);
        let profile = profiler.join().unwrap();
        let bytes = crate::pprof::encode_gzip(&profile);
        let decoded = crate::pprof::decode(&bytes, &crate::pprof::DecodeLimits::default()).unwrap();
        let totals = crate::pprof::sample_type_totals(&decoded);
        assert_eq!(totals[0].0, "samples");
        assert_eq!(totals[1].0, "cpu");
        assert!(totals[0].2 > 0, "a busy thread was sampled");
        assert_eq!(totals[1].2, totals[0].2 * 10_000_000);
        assert_eq!(crate::ingest::metric_name(&decoded), "process_cpu");
        assert!(
            decoded
                .string_table
                .iter()
                .any(|name| name.contains("own_cpu_profile_is_a_valid_pprof")),
            "symbolized: the burning test function is named"
        );
    }
}
