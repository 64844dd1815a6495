//! Ledger-read benchmark: what one pass, one gauges refresh, `status`, and `cost report` for
//! one day and for one month read from a ledger holding a year of history, before and after
//! the reads were bounded by the `by-blocker` and `by-settled-day` indexes.
//!
//!   cargo run --example ledger_reads                      # a year: 3.6 M terminal jobs
//!   cargo run --example ledger_reads -- --emulator        # 50,000 terminal jobs, three ways
//!
//! The ledger is [`History`]: terminal jobs spread over the days (the last is today), jobs
//! waiting and in flight. A year's 3.6 million jobs are not held: [`YearLedger`] keeps each
//! job's index keys and item size and builds a job only when a read returns it. It counts what
//! DynamoDB would read for each Query: the items whose keys match (partition, and sort-key
//! condition), their bytes, in 1 MB pages. "After" runs mayfly's own read paths against it
//! (`load_snapshot`, `LedgerGauges::load`, `status`'s reads, `cost_report::read_jobs`);
//! "before" issues the queries the earlier read paths issued (every state, whole; a pass: the
//! five active states and every job of each active batch) and counts them the same way.
//!
//! `--emulator` confirms the counting on a smaller history: it deploys `infra/mayfly.yaml`
//! into the emulator `scripts/emulator.sh start` runs, writes the history into it, and runs
//! the "after" reads through the DynamoDB adapter (counting the items each Query page
//! returns), through the in-memory `FakeLedger` holding the same jobs, and through
//! `YearLedger`; it prints the three counts and exits 1 if they differ.

use std::collections::{BTreeSet, HashMap};
use std::process::{Command, ExitCode};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use clap::Parser;
use mayfly::aws::dynamo::{item_bytes, ledger_item, DynamoLedger};
use mayfly::cost_report::{self, GroupBy, Query};
use mayfly::fakes::history::{History, Spec};
use mayfly::fakes::{FakeConfigStore, FakeLedger};
use mayfly::job::{Job, JobState};
use mayfly::ledger_index::{self, ReadCount, ReadMeter, Retention};
use mayfly::metrics::{load_today, LedgerGauges};
use mayfly::ports::{Ledger, PageQuery, StoreError};
use mayfly::scheduler::{load_snapshot, ACTIVE};

#[derive(Debug, Parser)]
struct Args {
    /// Terminal jobs (default: 3,600,000; with --emulator 50,000).
    #[arg(long)]
    terminal: Option<u64>,
    /// Days they spread over (default: 365; with --emulator 30).
    #[arg(long)]
    days: Option<u32>,
    /// Jobs waiting (default: 10,000; with --emulator 1,000).
    #[arg(long)]
    waiting: Option<u64>,
    /// Jobs in flight (default: 500; with --emulator 50).
    #[arg(long)]
    in_flight: Option<u64>,
    /// Payers (default: 100; with --emulator 20).
    #[arg(long)]
    payers: Option<u32>,
    /// Confirm the counts against the emulator (scripts/emulator.sh start).
    #[arg(long)]
    emulator: bool,
}

/// The moment the history ends.
fn now() -> DateTime<Utc> {
    "2026-12-07T12:00:00Z".parse().expect("a time")
}

fn today() -> DateTime<Utc> {
    "2026-12-07T00:00:00Z".parse().expect("a time")
}

/// A generated ledger, held as index keys and item sizes.
struct YearLedger {
    h: History,
    meter: ReadMeter,
    /// Per settled day: (billed_from, job) in sort-key order.
    settled: HashMap<NaiveDate, Vec<(DateTime<Utc>, u64)>>,
    /// Dead and cancelled jobs per (payer, batch day).
    blockers: HashMap<(u32, u32), Vec<u64>>,
    /// Terminal jobs per (payer, batch day), for the earlier whole-batch reads.
    batches: HashMap<(u32, u32), Vec<u64>>,
    /// Item sizes of each terminal state, in by-state index order.
    terminal_sizes: HashMap<JobState, Vec<u32>>,
    sizes: Mutex<HashMap<(JobState, usize, bool, bool), u64>>,
}

impl YearLedger {
    fn new(h: History) -> Self {
        let mut y = YearLedger {
            h,
            meter: ReadMeter::new(),
            settled: HashMap::new(),
            blockers: HashMap::new(),
            batches: HashMap::new(),
            terminal_sizes: HashMap::new(),
            sizes: Mutex::new(HashMap::new()),
        };
        for k in 0..h.terminal {
            let s = h.spec(k);
            let (launched, end) = (s.launched.expect("launched"), s.end.expect("ended"));
            // The generated job's settled time is its last update, a second after the end.
            let settled = (end + Duration::seconds(1)).date_naive();
            y.settled.entry(settled).or_default().push((launched, k));
            if ledger_index::is_blocker(s.state) {
                y.blockers
                    .entry((s.payer, s.batch_day))
                    .or_default()
                    .push(k);
            }
            y.batches.entry((s.payer, s.batch_day)).or_default().push(k);
            if k % 9973 == 0 {
                let job = h.job(&s);
                assert_eq!(
                    ledger_index::settled_at(&job),
                    Some(end + Duration::seconds(1))
                );
                assert_eq!(ledger_index::billed_from(&job), Some(launched));
                assert_eq!(y.size(&s), exact_size(&job), "job {k}: one size per shape");
            }
            let size = y.size(&s) as u32;
            y.terminal_sizes.entry(s.state).or_default().push(size);
        }
        for v in y.settled.values_mut() {
            v.sort_unstable();
        }
        y
    }

    /// The item size of a job: the same for every job of one shape (fixed-width fields).
    fn size(&self, s: &Spec) -> u64 {
        let key = (s.state, s.kind, s.launched.is_some(), s.end.is_some());
        let mut sizes = self.sizes.lock().expect("sizes");
        *sizes
            .entry(key)
            .or_insert_with(|| exact_size(&self.h.job(s)))
    }

    fn active(&self) -> impl Iterator<Item = Spec> + '_ {
        (self.h.terminal..self.h.total()).map(|k| self.h.spec(k))
    }

    /// One Query over `matching` (index order): counted, and the jobs built.
    fn query(&self, matching: Vec<Spec>) -> Vec<Job> {
        self.meter.query_of(matching.iter().map(|s| self.size(s)));
        matching.iter().map(|s| self.h.job(s)).collect()
    }

    /// The earlier whole-state read, counted without building 3.6 million jobs.
    fn count_state(&self, state: JobState) {
        match self.terminal_sizes.get(&state) {
            Some(sizes) => self.meter.query_of(sizes.iter().map(|&b| u64::from(b))),
            None if state.is_terminal() => self.meter.query_of([]),
            None => {
                let specs: Vec<Spec> = self.active().filter(|s| s.state == state).collect();
                self.meter.query_of(specs.iter().map(|s| self.size(s)));
            }
        }
    }

    /// The earlier whole-batch read.
    fn count_batch(&self, payer: u32, day: u32) {
        let mut specs: Vec<Spec> = self
            .batches
            .get(&(payer, day))
            .into_iter()
            .flatten()
            .map(|&k| self.h.spec(k))
            .collect();
        specs.extend(
            self.active()
                .filter(|s| s.payer == payer && s.batch_day == day),
        );
        self.meter.query_of(specs.iter().map(|s| self.size(s)));
    }

    /// (payer, batch day) of a payer id and batch, if the history has them.
    fn group(&self, payer_id: &str, batch: &str) -> Option<(u32, u32)> {
        let payer: u32 = payer_id.strip_prefix("payer-")?.parse().ok()?;
        let day: NaiveDate = batch.parse().ok()?;
        let first = self.h.date(0);
        Some((payer, u32::try_from((day - first).num_days()).ok()?))
    }
}

fn exact_size(job: &Job) -> u64 {
    item_bytes(&ledger_item(job, Retention::default()).expect("an item"))
}

fn read_only() -> StoreError {
    StoreError::Other("the benchmark ledger is read-only".into())
}

#[async_trait]
impl Ledger for YearLedger {
    async fn create(&self, _: &Job) -> Result<bool, StoreError> {
        Err(read_only())
    }
    async fn get(&self, _: &str) -> Result<Option<Job>, StoreError> {
        Err(read_only())
    }
    async fn update(&self, _: &Job, _: u64) -> Result<(), StoreError> {
        Err(read_only())
    }
    async fn update_all(&self, _: &[(Job, u64)]) -> Result<(), StoreError> {
        Err(read_only())
    }
    async fn by_state(&self, state: JobState) -> Result<Vec<Job>, StoreError> {
        self.page(&PageQuery::all(state)).await
    }
    async fn by_batch(&self, payer_id: &str, batch: &str) -> Result<Vec<Job>, StoreError> {
        let Some((payer, day)) = self.group(payer_id, batch) else {
            return Ok(self.query(Vec::new()));
        };
        let mut specs: Vec<Spec> = self
            .batches
            .get(&(payer, day))
            .into_iter()
            .flatten()
            .map(|&k| self.h.spec(k))
            .collect();
        specs.extend(
            self.active()
                .filter(|s| s.payer == payer && s.batch_day == day),
        );
        Ok(self.query(specs))
    }
    async fn blockers(&self, payer_id: &str, batch: &str) -> Result<Vec<Job>, StoreError> {
        let specs = self
            .group(payer_id, batch)
            .and_then(|g| self.blockers.get(&g))
            .into_iter()
            .flatten()
            .map(|&k| self.h.spec(k))
            .collect();
        Ok(self.query(specs))
    }
    async fn settled_on(
        &self,
        day: NaiveDate,
        billed_before: Option<DateTime<Utc>>,
    ) -> Result<Vec<Job>, StoreError> {
        let specs = self
            .settled
            .get(&day)
            .into_iter()
            .flatten()
            .filter(|(from, _)| billed_before.is_none_or(|b| *from < b))
            .map(|&(_, k)| self.h.spec(k))
            .collect();
        Ok(self.query(specs))
    }
    async fn page(&self, q: &PageQuery) -> Result<Vec<Job>, StoreError> {
        // The key condition: the state and the submitted range. Terminal states walk the
        // history (only `jobs list` and a report without --from ask for them).
        let specs: Vec<Spec> = (0..self.h.total())
            .map(|k| self.h.spec(k))
            .filter(|s| s.state == q.state)
            .filter(|s| q.since.is_none_or(|t| s.submitted >= t))
            .filter(|s| q.before.is_none_or(|t| s.submitted < t))
            .collect();
        let mut specs = specs;
        specs.sort_by_key(|s| (s.submitted, s.k));
        let jobs = self.query(specs);
        let mut jobs: Vec<Job> = jobs.into_iter().filter(|j| q.matches(j)).collect();
        jobs.truncate(q.limit);
        Ok(jobs)
    }
}

fn day_query(from: DateTime<Utc>, to: DateTime<Utc>) -> Query {
    Query {
        from: Some(from),
        to: Some(to),
        payer: None,
        by: GroupBy::Payer,
    }
}

const OPS: [&str; 5] = [
    "one pass",
    "one gauges refresh",
    "status",
    "cost report, one day",
    "cost report, one month",
];

/// The reads of each operation as mayfly now makes them, counted by `meter`.
async fn after(ledger: &dyn Ledger, meter: &dyn Fn() -> ReadCount) -> Vec<ReadCount> {
    let config = FakeConfigStore::new();
    let yesterday = day_query(today() - Duration::days(1), today());
    let month = day_query(today() - Duration::days(30), today());
    let mut out = Vec::new();
    let mut mark = meter();
    let mut lap = |out: &mut Vec<ReadCount>| {
        let now = meter();
        out.push(now - mark);
        mark = now;
    };
    load_snapshot(ledger).await.expect("snapshot");
    lap(&mut out);
    LedgerGauges::load(ledger, &config, now())
        .await
        .expect("gauges");
    lap(&mut out);
    let snapshot = load_snapshot(ledger).await.expect("snapshot");
    load_today(ledger, Some(snapshot), now())
        .await
        .expect("today");
    lap(&mut out);
    cost_report::read_jobs(ledger, &yesterday, now())
        .await
        .expect("day");
    lap(&mut out);
    cost_report::read_jobs(ledger, &month, now())
        .await
        .expect("month");
    lap(&mut out);
    out
}

/// The queries the earlier read paths made for each operation.
fn before(y: &YearLedger) -> Vec<ReadCount> {
    let mut out = Vec::new();
    let mut mark = y.meter.count();
    let mut lap = |out: &mut Vec<ReadCount>| {
        let now = y.meter.count();
        out.push(now - mark);
        mark = now;
    };
    // A pass: the five active states, then every job of each batch with an active job.
    for state in ACTIVE {
        y.count_state(state);
    }
    let groups: BTreeSet<(u32, u32)> = y.active().map(|s| (s.payer, s.batch_day)).collect();
    for (payer, day) in groups {
        y.count_batch(payer, day);
    }
    lap(&mut out);
    // Gauges, status, and both reports: every state, whole.
    for _ in 1..OPS.len() {
        for state in JobState::ALL {
            y.count_state(state);
        }
        lap(&mut out);
    }
    out
}

fn mb(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1e6)
}

/// What the targets allow, from the history itself.
struct Bounds {
    /// In flight + waiting + today's terminal + blockers of the active batches.
    work: u64,
    /// Jobs billed yesterday (an attempt's bill overlaps the day).
    billed_yesterday: u64,
}

fn bounds(y: &YearLedger) -> Bounds {
    let h = &y.h;
    let groups: BTreeSet<(u32, u32)> = y.active().map(|s| (s.payer, s.batch_day)).collect();
    let blockers: u64 = groups
        .iter()
        .map(|g| y.blockers.get(g).map_or(0, Vec::len) as u64)
        .sum();
    let today_terminal: u64 = [
        today().date_naive(),
        today().date_naive() + Duration::days(1),
    ]
    .iter()
    .map(|d| y.settled.get(d).map_or(0, Vec::len) as u64)
    .sum();
    let (from, to) = (today() - Duration::days(1), today());
    let billed_yesterday = (0..h.total())
        .map(|k| h.spec(k))
        .filter(|s| s.launched.is_some_and(|l| l < to) && s.end.is_none_or(|e| e >= from))
        .count() as u64;
    Bounds {
        work: h.in_flight + h.waiting + today_terminal + blockers,
        billed_yesterday,
    }
}

fn print_table(h: &History, b: &[ReadCount], a: &[ReadCount], bounds: &Bounds) -> bool {
    println!(
        "Ledger: {} terminal jobs over {} days, {} waiting, {} in flight, {} payers (item bytes as written now)",
        h.terminal, h.days, h.waiting, h.in_flight, h.payers
    );
    println!(
        "{:<24} {:>12} {:>10} {:>8} | {:>9} {:>8} {:>7} | target",
        "operation", "items before", "MB before", "queries", "items now", "MB now", "queries"
    );
    let mut ok = true;
    for (i, op) in OPS.iter().enumerate() {
        let (limit, what) = match i {
            0..=2 => (bounds.work, "in-flight + waiting + today's + blockers"),
            3 => (2 * bounds.billed_yesterday, "2 x jobs billed that day"),
            _ => (u64::MAX, ""),
        };
        let met = a[i].items <= limit;
        ok &= met;
        let target = if limit == u64::MAX {
            "-".to_owned()
        } else {
            format!(
                "<= {limit} ({what}): {}",
                if met { "met" } else { "MISSED" }
            )
        };
        println!(
            "{:<24} {:>12} {:>10} {:>8} | {:>9} {:>8} {:>7} | {target}",
            op,
            b[i].items,
            mb(b[i].bytes),
            b[i].queries,
            a[i].items,
            mb(a[i].bytes),
            a[i].queries
        );
    }
    ok
}

fn history(args: &Args) -> History {
    let small = args.emulator;
    History {
        terminal: args
            .terminal
            .unwrap_or(if small { 50_000 } else { 3_600_000 }),
        days: args.days.unwrap_or(if small { 30 } else { 365 }),
        waiting: args.waiting.unwrap_or(if small { 1_000 } else { 10_000 }),
        in_flight: args.in_flight.unwrap_or(if small { 50 } else { 500 }),
        payers: args.payers.unwrap_or(if small { 20 } else { 100 }),
        now: now(),
    }
}

/// Writes the history into a fresh deployment in the emulator; returns its ledger.
async fn seed_emulator(h: &History, meter: Arc<ReadMeter>) -> Result<DynamoLedger, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/emulator.sh");
    let url = Command::new("bash")
        .args([script, "url"])
        .output()
        .map_err(|e| e.to_string())?;
    let url = String::from_utf8_lossy(&url.stdout).trim().to_owned();
    if url.is_empty() {
        return Err("no emulator: run `scripts/emulator.sh start` first".into());
    }
    let name = format!("reads-{}", std::process::id());
    let deployed = Command::new("bash")
        .args([script, "deploy", &name])
        .output()
        .map_err(|e| e.to_string())?;
    if !deployed.status.success() {
        return Err(format!(
            "deploy: {}",
            String::from_utf8_lossy(&deployed.stderr)
        ));
    }
    let sdk = mayfly::aws::load_sdk_config(Some("us-east-1"), Some(&url), None).await;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let table = format!("{name}-jobs");
    let started = Instant::now();
    let ks: Vec<u64> = (0..h.total()).collect();
    for chunk in ks.chunks(25) {
        let writes = chunk
            .iter()
            .map(|&k| {
                let item = ledger_item(&h.job(&h.spec(k)), Retention::default())
                    .map_err(|e| e.to_string())?;
                let put = aws_sdk_dynamodb::types::PutRequest::builder()
                    .set_item(Some(item))
                    .build()
                    .map_err(|e| e.to_string())?;
                Ok(aws_sdk_dynamodb::types::WriteRequest::builder()
                    .put_request(put)
                    .build())
            })
            .collect::<Result<Vec<_>, String>>()?;
        client
            .batch_write_item()
            .request_items(&table, writes)
            .send()
            .await
            .map_err(|e| format!("BatchWriteItem: {e:?}"))?;
    }
    eprintln!(
        "seeded {} items into {table} in {:.0?}",
        h.total(),
        started.elapsed()
    );
    Ok(DynamoLedger::new(client, table).with_meter(meter))
}

async fn confirm(h: History) -> Result<bool, String> {
    let meter = Arc::new(ReadMeter::new());
    let dynamo = seed_emulator(&h, Arc::clone(&meter)).await?;
    let fake = FakeLedger::new();
    for k in 0..h.total() {
        fake.create(&h.job(&h.spec(k)))
            .await
            .map_err(|e| e.to_string())?;
    }
    let year = YearLedger::new(h);
    let e = after(&dynamo, &|| meter.count()).await;
    let f = after(&fake, &|| fake.reads()).await;
    let y = after(&year, &|| year.meter.count()).await;
    println!(
        "Emulator check: {} terminal jobs over {} days, {} waiting, {} in flight, {} payers",
        h.terminal, h.days, h.waiting, h.in_flight, h.payers
    );
    println!(
        "{:<24} {:>17} {:>17} {:>17} | same",
        "operation", "emulator", "FakeLedger", "YearLedger"
    );
    let mut same = true;
    for (i, op) in OPS.iter().enumerate() {
        let agree = e[i].items == f[i].items
            && f[i].items == y[i].items
            && e[i].bytes == f[i].bytes
            && f[i].bytes == y[i].bytes
            && e[i].queries == f[i].queries
            && f[i].queries == y[i].queries;
        same &= agree;
        let cell = |c: ReadCount| format!("{} ({} MB)", c.items, mb(c.bytes));
        println!(
            "{:<24} {:>17} {:>17} {:>17} | {}",
            op,
            cell(e[i]),
            cell(f[i]),
            cell(y[i]),
            if agree { "yes" } else { "NO" }
        );
    }
    Ok(same)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let h = history(&args);
    let started = Instant::now();
    if args.emulator {
        return match confirm(h).await {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let year = YearLedger::new(h);
    eprintln!("indexed {} jobs in {:.1?}", h.total(), started.elapsed());
    let b = before(&year);
    let a = after(&year, &|| year.meter.count()).await;
    let ok = print_table(&h, &b, &a, &bounds(&year));
    eprintln!("done in {:.1?}", started.elapsed());
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
