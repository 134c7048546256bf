//! What the kernels' tests share: the timing loop of the ignored speed tests, and a record of
//! which threads of a test's own rayon pool ran product tasks.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::thread::ThreadId;

/// Runs `run(true)` and `run(false)` in turn `rounds` times (each returns seconds, so load on a
/// shared machine hits both alike) and returns the two medians, `true`'s first.
pub fn alternated_medians(rounds: usize, mut run: impl FnMut(bool) -> f64) -> (f64, f64) {
    let (mut a, mut b) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for _ in 0..rounds {
        a.push(run(true));
        b.push(run(false));
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (med(&mut a), med(&mut b))
}

/// Threads that ran a product task, per watched pool name (threads are named `<pool>-<i>`).
/// Keyed by pool so that tests watching different pools can run at the same time.
static SEEN: Mutex<Option<HashMap<String, HashSet<ThreadId>>>> = Mutex::new(None);

/// Called at the start of every product task: notes the thread when it belongs to a pool
/// [`threads_used`] is watching (other tests run products at the same time on other threads).
pub fn touched() {
    let me = std::thread::current();
    let Some((pool, _)) = me.name().and_then(|n| n.rsplit_once('-')) else {
        return;
    };
    if let Some(set) = SEEN.lock().unwrap().as_mut().and_then(|m| m.get_mut(pool)) {
        set.insert(me.id());
    }
}

/// How many threads of a fresh 2-thread pool named `pool` ran tasks of `product`: it runs up
/// to 20 times, until both have (on a loaded machine the second worker may wake too late for
/// one).
pub fn threads_used(pool: &str, mut product: impl FnMut() + Send) -> usize {
    let workers = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .thread_name({
            let pool = pool.to_string();
            move |i| format!("{pool}-{i}")
        })
        .build()
        .unwrap();
    let seen = || {
        SEEN.lock()
            .unwrap()
            .get_or_insert_with(HashMap::new)
            .entry(pool.to_string())
            .or_default()
            .len()
    };
    SEEN.lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .insert(pool.to_string(), HashSet::new());
    for _ in 0..20 {
        workers.install(&mut product);
        if seen() >= 2 {
            break;
        }
    }
    let used = seen();
    SEEN.lock().unwrap().as_mut().unwrap().remove(pool);
    used
}
