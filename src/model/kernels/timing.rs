//! The timing loop of the kernels' ignored speed tests.

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
