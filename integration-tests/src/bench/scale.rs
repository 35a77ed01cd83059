//! The pure parts of `consumer-bench`'s scale scenario: what an even split is, the KCL's lease-table
//! arithmetic for a fleet, on-demand prices, the verdicts against issue 16's targets, and the
//! final table. The scenario itself (processes, signals, the capacity proxy) is in the binary.
//!
//! ```text
//!  cell (W, L) ──▶ measured: units per lease-hour (DynamoDB's), cold start to even, failovers,
//!                  RSS and CPU per idle shard
//!              ──▶ kcl_arithmetic(W, L, full-scan units) ──▶ ScaleRow ──▶ verdicts, table
//! ```

use std::fmt::Write as _;
use std::time::Duration;

use crate::tools::thousands;

/// The Java KCL's renewal interval: `failoverTimeMillis / 3 - 25 ms` with the default 10 s.
pub const KCL_RENEW: Duration = Duration::from_micros(3_308_333);

/// The Java KCL 2.x taker's interval (a full scan by every worker):
/// `2 x (failoverTimeMillis + 25 ms)` with the default 10 s.
pub const KCL_TAKER: Duration = Duration::from_millis(20_050);

/// On-demand write request units, US East (N. Virginia): dollars per million.
pub const WRITE_PRICE_PER_MILLION: f64 = 1.25;

/// On-demand read request units, US East (N. Virginia): dollars per million.
pub const READ_PRICE_PER_MILLION: f64 = 0.25;

/// Hours in a month, as AWS's price pages count them.
pub const HOURS_PER_MONTH: f64 = 730.0;

/// Workers per child process besides the victim's (one process each would be 50 processes).
pub const WORKERS_PER_PROCESS: usize = 10;

/// Resident memory an idle shard may add to its worker's process and still cost "kilobytes", KiB.
pub const IDLE_SHARD_RSS_LIMIT_KIB: f64 = 64.0;

/// CPU an idle shard may cost its worker's process and still count as none measurable:
/// 0.1 % of a core (microseconds of CPU per second).
pub const IDLE_SHARD_CPU_LIMIT_MICROS_PER_SECOND: f64 = 1_000.0;

/// The cold-start target: an even split within 30 s (issue 16 sets it at W = 10, L = 1,000).
pub const COLD_START_TARGET: Duration = Duration::from_secs(30);

/// DynamoDB capacity per lease-hour.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PerLeaseHour {
    /// Write units.
    pub write: f64,
    /// Read units.
    pub read: f64,
}

impl PerLeaseHour {
    /// `write` and `read` units consumed by `leases` leases over `window`.
    pub fn measured(write: f64, read: f64, leases: usize, window: Duration) -> PerLeaseHour {
        let lease_hours = leases as f64 * window.as_secs_f64() / 3600.0;
        if lease_hours <= 0.0 {
            return PerLeaseHour::default();
        }
        PerLeaseHour {
            write: write / lease_hours,
            read: read / lease_hours,
        }
    }

    /// Dollars per lease-hour at on-demand list prices.
    pub fn dollars(self) -> f64 {
        (self.write * WRITE_PRICE_PER_MILLION + self.read * READ_PRICE_PER_MILLION) / 1e6
    }

    /// Dollars per month for `leases` leases at on-demand list prices.
    pub fn monthly(self, leases: usize) -> f64 {
        self.dollars() * leases as f64 * HOURS_PER_MONTH
    }
}

/// The formula [`kcl_arithmetic`] applies, for the report.
pub const KCL_FORMULA: &str = "KCL 2.x defaults (failoverTimeMillis 10 s): every lease renewed \
     every 10/3 s - 25 ms (1 write unit, items under 1 KB) = 1,088 write units per lease-hour; \
     every worker's taker scans the whole table every 2 x (10 s + 25 ms) = 20.05 s, eventually \
     consistent: W x 179.6 scans/h x (the table's full-scan read units, DynamoDB's figure for the \
     same table) / L read units per lease-hour; leader election, shard sync and lease-cleanup \
     calls left out (they only add to the KCL's figure)";

/// The Java KCL's (2.x, leaderless) idle lease-table consumption per lease-hour for `workers`
/// workers holding `leases` leases in a table whose full scan costs `full_scan_units` read units
/// (see [`KCL_FORMULA`]).
pub fn kcl_arithmetic(workers: usize, leases: usize, full_scan_units: f64) -> PerLeaseHour {
    periodic(workers, leases, full_scan_units, KCL_RENEW, KCL_TAKER)
}

/// Our worker's arithmetic with the same terms: a renewal per lease every `renew`, a full scan
/// per worker every `scan`.
pub fn ours_arithmetic(
    workers: usize,
    leases: usize,
    full_scan_units: f64,
    renew: Duration,
    scan: Duration,
) -> PerLeaseHour {
    periodic(workers, leases, full_scan_units, renew, scan)
}

fn periodic(
    workers: usize,
    leases: usize,
    full_scan_units: f64,
    renew: Duration,
    scan: Duration,
) -> PerLeaseHour {
    let per_hour = |every: Duration| 3600.0 / every.as_secs_f64().max(f64::MIN_POSITIVE);
    PerLeaseHour {
        write: per_hour(renew),
        read: workers as f64 * per_hour(scan) * full_scan_units / leases.max(1) as f64,
    }
}

/// Whether `held` (leases per worker, one entry per worker, zeros included) is an even split of
/// `leases`: all of them held, each worker at `floor(L/W)` or `ceil(L/W)` (with fewer leases
/// than workers: at most one each).
pub fn even_split(leases: usize, held: &[usize]) -> bool {
    if held.is_empty() {
        return false;
    }
    let floor = leases / held.len();
    let ceil = leases.div_ceil(held.len());
    held.iter().sum::<usize>() == leases && held.iter().all(|n| (floor..=ceil).contains(n))
}

/// How the workers besides the victim are spread over child processes: at most
/// [`WORKERS_PER_PROCESS`] each, as evenly as that allows.
pub fn host_sizes(others: usize) -> Vec<usize> {
    let processes = others.div_ceil(WORKERS_PER_PROCESS);
    (0..processes)
        .map(|i| others / processes + usize::from(i < others % processes))
        .collect()
}

/// A timing of the scenario: seconds, or why there is none.
pub type Figure = Result<f64, String>;

/// One line of the final table.
#[derive(Clone, Debug)]
pub struct ScaleRow {
    /// `ours` or `kcl-rs`.
    pub implementation: &'static str,
    /// Workers.
    pub workers: usize,
    /// Leases (idle shards).
    pub leases: usize,
    /// Consumption measured over the idle window (DynamoDB's figures).
    pub measured: Option<PerLeaseHour>,
    /// The KCL's arithmetic for the same cell.
    pub kcl: Option<PerLeaseHour>,
    /// From the cold start of all workers to an even split.
    pub cold_start: Option<Figure>,
    /// From kill -9 of a worker until all its shards run elsewhere.
    pub kill: Option<Figure>,
    /// From SIGSTOP of a worker until all its shards run elsewhere.
    pub stop: Option<Figure>,
    /// Resident memory an idle shard adds to its worker's process, KiB (a one-worker process
    /// against one holding no lease).
    pub rss_per_shard_kib: Option<f64>,
    /// CPU an idle shard adds to its worker's process, microseconds per second (likewise).
    pub cpu_per_shard: Option<f64>,
    /// The failover time the workers ran with.
    pub failover: Duration,
}

impl ScaleRow {
    /// The verdicts against issue 16's targets (those that apply to this row), the cost with its
    /// ratio to the KCL's arithmetic. A peer's row gets only that ratio: the targets are ours.
    pub fn verdicts(&self) -> String {
        let mut out = Vec::new();
        let ratio = match (self.measured, self.kcl) {
            (Some(measured), Some(kcl)) if kcl.dollars() > 0.0 => {
                Some(measured.dollars() / kcl.dollars())
            }
            _ => None,
        };
        if self.implementation != "ours" {
            return ratio.map_or_else(String::new, |r| {
                format!("(a peer) cost {r:.2}x the KCL's arithmetic")
            });
        }
        if let Some(ratio) = ratio {
            out.push(format!(
                "cost {} ({ratio:.2}x)",
                if ratio <= 1.0 { "ok" } else { "OVER" }
            ));
        }
        let limit = (self.failover + Duration::from_secs(3)).as_secs_f64();
        let failovers: Vec<&Figure> = [&self.kill, &self.stop].into_iter().flatten().collect();
        if !failovers.is_empty() {
            out.push(
                if failovers.iter().all(|f| matches!(f, Ok(s) if *s <= limit)) {
                    "failover ok".to_owned()
                } else {
                    "failover OVER".to_owned()
                },
            );
        }
        if let Some(cold) = &self.cold_start {
            out.push(
                if matches!(cold, Ok(s) if *s <= COLD_START_TARGET.as_secs_f64()) {
                    "even ok".to_owned()
                } else {
                    "even OVER".to_owned()
                },
            );
        }
        if let (Some(rss), Some(cpu)) = (self.rss_per_shard_kib, self.cpu_per_shard) {
            out.push(
                if rss <= IDLE_SHARD_RSS_LIMIT_KIB && cpu <= IDLE_SHARD_CPU_LIMIT_MICROS_PER_SECOND
                {
                    "idle ok".to_owned()
                } else {
                    "idle OVER".to_owned()
                },
            );
        }
        out.join(", ")
    }
}

/// A least-squares line through `points` (x, y): (intercept, slope), or `None` with fewer than
/// two distinct x.
pub fn fit_line(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    if n < 2.0 {
        return None;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    if sxx <= f64::EPSILON * mean_x.abs().max(1.0) {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let slope = sxy / sxx;
    Some((mean_y - slope * mean_x, slope))
}

/// One point of the idle-cost curve: a worker alone on `leases` idle shards.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CurvePoint {
    /// Leases it held over the window.
    pub leases: usize,
    /// Its process's resident memory at the end of the window, KiB.
    pub rss_kib: f64,
    /// Its process's CPU over the window, microseconds per second.
    pub cpu: f64,
}

/// What the idle-cost curve says: the cost of one more idle shard (the slopes) apart from the
/// worker's own (the intercepts).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IdleCurve {
    /// Resident memory an idle shard adds, KiB.
    pub rss_per_shard_kib: f64,
    /// CPU an idle shard adds, microseconds per second.
    pub cpu_per_shard: f64,
    /// A worker's own resident memory (no shard), KiB.
    pub rss_base_kib: f64,
    /// A worker's own CPU (no shard), microseconds per second.
    pub cpu_base: f64,
}

impl IdleCurve {
    /// Lines through the points, or `None` with fewer than two distinct lease counts.
    pub fn fit(points: &[CurvePoint]) -> Option<IdleCurve> {
        let rss: Vec<(f64, f64)> = points
            .iter()
            .map(|p| (p.leases as f64, p.rss_kib))
            .collect();
        let cpu: Vec<(f64, f64)> = points.iter().map(|p| (p.leases as f64, p.cpu)).collect();
        let (rss_base_kib, rss_per_shard_kib) = fit_line(&rss)?;
        let (cpu_base, cpu_per_shard) = fit_line(&cpu)?;
        Some(IdleCurve {
            rss_per_shard_kib,
            cpu_per_shard,
            rss_base_kib,
            cpu_base,
        })
    }

    /// Against the idle-shard limits.
    pub fn verdict(&self) -> &'static str {
        if self.rss_per_shard_kib <= IDLE_SHARD_RSS_LIMIT_KIB
            && self.cpu_per_shard <= IDLE_SHARD_CPU_LIMIT_MICROS_PER_SECOND
        {
            "idle ok"
        } else {
            "idle OVER"
        }
    }
}

fn seconds(figure: &Option<Figure>) -> String {
    match figure {
        None => "-".to_owned(),
        Some(Ok(s)) => format!("{s:.1}"),
        Some(Err(why)) => why.clone(),
    }
}

fn number(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

fn dollars(value: Option<f64>) -> String {
    value.map_or_else(
        || "-".to_owned(),
        |v| {
            if v < 10.0 {
                format!("${v:.2}")
            } else {
                format!("${}", thousands(v))
            }
        },
    )
}

/// The final table, one line per row, with the targets under it.
pub fn table(rows: &[ScaleRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<7} {:>3} {:>5} | {:>7} {:>7} {:>9} | {:>7} {:>6} {:>9} | {:>8} {:>8} {:>8} | {:>8} {:>8} | verdicts",
        "",
        "W",
        "L",
        "write/",
        "read/",
        "$/month",
        "KCL w/",
        "r/",
        "$/month",
        "cold to",
        "kill -9",
        "SIGSTOP",
        "RSS/shd",
        "CPU/shd"
    );
    let _ = writeln!(
        out,
        "{:<7} {:>3} {:>5} | {:>7} {:>7} {:>9} | {:>7} {:>6} {:>9} | {:>8} {:>8} {:>8} | {:>8} {:>8} |",
        "",
        "",
        "",
        "lease-h",
        "lease-h",
        "",
        "lease-h",
        "lease-h",
        "",
        "even, s",
        "s",
        "s",
        "KiB",
        "us/s"
    );
    for row in rows {
        let _ = writeln!(
            out,
            "{:<7} {:>3} {:>5} | {:>7} {:>7} {:>9} | {:>7} {:>6} {:>9} | {:>8} {:>8} {:>8} | {:>8} {:>8} | {}",
            row.implementation,
            row.workers,
            row.leases,
            number(row.measured.map(|m| m.write), 0),
            number(row.measured.map(|m| m.read), 0),
            dollars(row.measured.map(|m| m.monthly(row.leases))),
            number(row.kcl.map(|k| k.write), 0),
            number(row.kcl.map(|k| k.read), 0),
            dollars(row.kcl.map(|k| k.monthly(row.leases))),
            seconds(&row.cold_start),
            seconds(&row.kill),
            seconds(&row.stop),
            number(row.rss_per_shard_kib, 1),
            number(row.cpu_per_shard, 0),
            row.verdicts(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_fitted_through_points_gives_the_cost_per_shard_apart_from_the_workers_own() {
        let (a, b) = fit_line(&[(1.0, 3.0), (2.0, 5.0), (3.0, 7.0)]).unwrap();
        assert!((a - 1.0).abs() < 1e-9 && (b - 2.0).abs() < 1e-9, "{a} {b}");
        // Least squares, not the two ends (which would give 0.5 and 11): mean (10, 15 1/3).
        let (a, b) = fit_line(&[(0.0, 11.0), (10.0, 14.0), (20.0, 21.0)]).unwrap();
        assert!((b - 0.5).abs() < 1e-9, "{b}");
        assert!((a - 31.0 / 3.0).abs() < 1e-9, "{a}");
        let (a, b) = fit_line(&[(0.0, 10.0), (10.0, 20.0), (20.0, 18.0)]).unwrap();
        assert!((b - 0.4).abs() < 1e-9 && (a - 12.0).abs() < 1e-9, "{a} {b}");
        assert_eq!(fit_line(&[(5.0, 1.0)]), None);
        assert_eq!(
            fit_line(&[(5.0, 1.0), (5.0, 2.0)]),
            None,
            "one lease count only"
        );

        let point = |leases, rss_kib, cpu| CurvePoint {
            leases,
            rss_kib,
            cpu,
        };
        let curve = IdleCurve::fit(&[
            point(1, 20_040.0, 2_400.0),
            point(250, 30_000.0, 102_000.0),
            point(1000, 60_000.0, 402_000.0),
        ])
        .unwrap();
        assert!((curve.rss_per_shard_kib - 40.0).abs() < 0.01, "{curve:?}");
        assert!((curve.cpu_per_shard - 400.0).abs() < 0.01, "{curve:?}");
        assert!((curve.rss_base_kib - 20_000.0).abs() < 1.0, "{curve:?}");
        assert_eq!(curve.verdict(), "idle ok");
        let heavy = IdleCurve::fit(&[point(1, 0.0, 0.0), point(2, 100.0, 0.0)]).unwrap();
        assert_eq!(heavy.verdict(), "idle OVER");
    }

    #[test]
    fn an_even_split_holds_every_lease_within_one_of_the_fair_share() {
        assert!(even_split(8, &[4, 4]));
        assert!(!even_split(8, &[5, 3]));
        assert!(!even_split(8, &[4, 3]), "a lease unheld");
        assert!(even_split(100, &[34, 33, 33]));
        assert!(!even_split(100, &[35, 33, 32]));
        // Fewer leases than workers: at most one each, all held.
        assert!(even_split(8, &[1, 1, 1, 1, 1, 1, 1, 1, 0, 0]));
        assert!(!even_split(8, &[2, 1, 1, 1, 1, 1, 1, 0, 0, 0]));
        assert!(!even_split(8, &[1, 1, 1, 1, 1, 1, 1, 0, 0, 0]));
        assert!(!even_split(8, &[]));
    }

    #[test]
    fn the_kcl_renews_1088_times_a_lease_hour_and_scans_from_every_worker() {
        let kcl = kcl_arithmetic(2, 8, 1.0);
        assert!((kcl.write - 1088.2).abs() < 0.1, "{kcl:?}");
        // 2 workers x 179.55 scans an hour x 1 unit / 8 leases.
        assert!((kcl.read - 44.9).abs() < 0.1, "{kcl:?}");
        assert!((kcl_arithmetic(50, 1000, 37.5).read - 336.7).abs() < 0.1);
        let ours = ours_arithmetic(2, 8, 1.0, Duration::from_secs(4), Duration::from_secs(2));
        assert_eq!(
            ours,
            PerLeaseHour {
                write: 900.0,
                read: 450.0
            }
        );
    }

    #[test]
    fn prices_are_per_million_units_and_months_have_730_hours() {
        let per = PerLeaseHour {
            write: 1_000_000.0,
            read: 1_000_000.0,
        };
        assert_eq!(per.dollars(), 1.5);
        assert_eq!(per.monthly(2), 2.0 * 730.0 * 1.5);
        let measured = PerLeaseHour::measured(90.0, 45.0, 8, Duration::from_secs(45));
        assert_eq!(
            measured,
            PerLeaseHour {
                write: 900.0,
                read: 450.0
            }
        );
        assert_eq!(
            PerLeaseHour::measured(1.0, 1.0, 0, Duration::from_secs(1)),
            PerLeaseHour::default()
        );
    }

    #[test]
    fn the_other_workers_fill_processes_of_ten() {
        assert_eq!(host_sizes(1), vec![1]);
        assert_eq!(host_sizes(9), vec![9]);
        assert_eq!(host_sizes(10), vec![10]);
        assert_eq!(host_sizes(11), vec![6, 5]);
        assert_eq!(host_sizes(49), vec![10, 10, 10, 10, 9]);
        assert_eq!(host_sizes(0), Vec::<usize>::new());
    }

    #[test]
    fn verdicts_name_what_is_over_its_target() {
        let row = ScaleRow {
            implementation: "ours",
            workers: 10,
            leases: 1000,
            measured: Some(PerLeaseHour {
                write: 900.0,
                read: 675.0,
            }),
            kcl: Some(kcl_arithmetic(10, 1000, 37.5)),
            cold_start: Some(Ok(12.0)),
            kill: Some(Ok(10.5)),
            stop: Some(Ok(13.5)),
            rss_per_shard_kib: Some(20.0),
            cpu_per_shard: Some(50.0),
            failover: Duration::from_secs(10),
        };
        assert_eq!(
            row.verdicts(),
            "cost ok (0.94x), failover OVER, even ok, idle ok"
        );
        let kcl_rs = ScaleRow {
            implementation: "kcl-rs",
            cold_start: None,
            kill: None,
            stop: None,
            rss_per_shard_kib: None,
            cpu_per_shard: None,
            measured: Some(PerLeaseHour {
                write: 2000.0,
                read: 0.0,
            }),
            ..row.clone()
        };
        assert_eq!(
            kcl_rs.verdicts(),
            "(a peer) cost 1.82x the KCL's arithmetic"
        );
        let failed = ScaleRow {
            kill: Some(Err("none in 70 s".to_owned())),
            stop: Some(Ok(10.0)),
            cold_start: Some(Err("none in 120 s".to_owned())),
            ..row
        };
        assert_eq!(
            failed.verdicts(),
            "cost ok (0.94x), failover OVER, even OVER, idle ok"
        );
        let printed = table(&[failed, kcl_rs]);
        assert!(printed.contains("none in 70 s"), "{printed}");
        assert_eq!(printed.lines().count(), 4, "{printed}");
    }
}
