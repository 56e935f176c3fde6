#![allow(clippy::expect_used, clippy::unwrap_used)]

//! Memory of the connection doctor (issue 30 item 12), counted by a
//! global allocator that tracks live heap bytes:
//!
//! - `queue_full`: the writer's queue at its bound ([`doctor::CAPACITY`]
//!   steps), each with a refusal reason and fix as long as real ones
//!   (a redirect URI refused with the registered ones listed);
//! - `budgets_100k`: one step recorded for each of 100,000 clients within
//!   a minute (the per-client budgets, which live until a minute of
//!   silence), measured after the writer has drained the queue.
//!
//! SQLite's own page cache is not counted (it allocates outside Rust's
//! allocator); the table's size on disk is printed beside.
//!
//! `cargo bench --bench doctor`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use agentauth::clock::{SharedClock, SystemClock};
use agentauth::doctor::{self, Doctor, Step, step};
use agentauth::store::traces::TraceRow;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counter only observes sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

const CLIENTS: usize = 100_000;
const REASON: &str = "redirect_uri \"http://localhost:53122/callback\" is not registered for this client; registered: http://127.0.0.1:1455/callback, http://localhost:1455/callback";
const FIX: &str = "register http://localhost:53122/callback for this client (RFC 7592 update), or have the client send one of its registered redirect URIs";

fn client_id(i: usize) -> String {
    format!("c{i:021}")
}

fn main() {
    let mib = |bytes: isize| bytes as f64 / (1024.0 * 1024.0);

    // The queue at its bound: what it holds is rows like these.
    let before = live();
    let rows: Vec<TraceRow> = (0..doctor::CAPACITY)
        .map(|i| TraceRow {
            client_id: client_id(i),
            attempt: Some(doctor::attempt_id()),
            at: 1_800_000_000,
            step: step::AUTHORIZE,
            refused: true,
            reason: Some(REASON.into()),
            fix: Some(FIX.into()),
        })
        .collect();
    let queue = live() - before;
    drop(rows);
    println!(
        "doctor/queue_full: {} steps, {:.2} MiB ({} bytes a step)",
        doctor::CAPACITY,
        mib(queue),
        queue / doctor::CAPACITY as isize
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("doctor.db");
        let db = agentauth::store::connect(&format!("sqlite://{}?mode=rwc", path.display()), 4, None)
            .await
            .unwrap();
        let clock: SharedClock = Arc::new(SystemClock);
        let (doctor, _) = Doctor::start(db.clone(), clock);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = live();
        let ids: Vec<String> = (0..CLIENTS).map(client_id).collect();
        let ids_bytes = live() - before;
        for (i, id) in ids.iter().enumerate() {
            doctor.record(Step {
                client_id: id,
                attempt: None,
                step: step::AUTHORIZE,
                refused: Some(REASON),
                fix: Some(FIX),
                detail: None,
            });
            // Let the writer keep up now and then, as real traffic would.
            if i % 2_000 == 1_999 {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let budgets = live() - before - ids_bytes;
        let rows: i64 = {
            use sea_orm::{EntityTrait, PaginatorTrait};
            entity::client_trace::Entity::find().count(&db).await.unwrap() as i64
        };
        println!(
            "doctor/budgets_100k: {} clients with a live budget, {:.2} MiB after the queue drained ({} bytes a client); {} steps written",
            doctor.budgets(),
            mib(budgets),
            budgets / CLIENTS as isize,
            rows
        );
        let on_disk = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
            + std::fs::metadata(path.with_extension("db-wal")).map(|m| m.len()).unwrap_or(0);
        println!(
            "doctor/table: {:.1} MiB on disk for {} steps ({} bytes a step, indexes included)",
            on_disk as f64 / (1024.0 * 1024.0),
            rows,
            on_disk / rows.max(1) as u64
        );
    });
}
