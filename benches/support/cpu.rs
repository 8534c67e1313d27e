//! CPU use per party, from Linux's /proc, so a benchmark's figure can be read against the
//! machine: settle, PostgreSQL, RabbitMQ, the load generator, and the rest.

use std::time::Duration;

pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// CPU seconds used so far, from Linux's /proc (zeros elsewhere): by this process (the settle
/// apps run in it), by one more settle process when one is `tracked` (a `settle serve` child),
/// by the children this process has waited for (pgbench, wrk: the load), by the PostgreSQL
/// server (its processes, and through the postmaster's children time, the backends that have
/// already exited), by RabbitMQ (`beam.smp`: every local node), and by the whole machine.
#[derive(Default)]
pub struct Cpu {
    settle: f64,
    tracked: f64,
    children: f64,
    postgres: f64,
    rabbitmq: f64,
    busy: f64,
}

/// `take` numbers of a /proc line's whitespace-separated fields, after the first `skip`.
fn fields(line: &str, skip: usize, take: usize) -> Vec<f64> {
    line.split_whitespace()
        .skip(skip)
        .take(take)
        .filter_map(|t| t.parse().ok())
        .collect()
}

/// Linux reports process and machine CPU time in USER_HZ ticks, 100 a second.
const TICKS_PER_SECOND: f64 = 100.0;

impl Cpu {
    pub fn now() -> Self {
        Self::tracking(None)
    }

    /// As `now`, with `tracked`'s CPU counted on its own.
    pub fn tracking(tracked: Option<u32>) -> Self {
        let mut cpu = Self::default();
        let tracked = tracked.map(|pid| pid.to_string());
        // The machine: `cpu  user nice system idle iowait irq softirq steal …`.
        if let Some(line) = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|stat| stat.lines().next().map(str::to_owned))
        {
            let ticks = fields(&line, 1, 8);
            let idle = ticks.get(3).unwrap_or(&0.0) + ticks.get(4).unwrap_or(&0.0);
            cpu.busy = (ticks.iter().sum::<f64>() - idle) / TICKS_PER_SECOND;
        }
        let own = std::process::id().to_string();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // `pid (comm) state … utime stime cutime cstime …`: the 12th to 15th fields after
            // the command name; cutime and cstime are those of the children it has waited for.
            let Some((head, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let [user, system, children_user, children_system] = fields(rest, 11, 4)[..] else {
                continue;
            };
            let own_time = (user + system) / TICKS_PER_SECOND;
            let children = (children_user + children_system) / TICKS_PER_SECOND;
            let pid = entry.file_name();
            if pid.to_str() == Some(own.as_str()) {
                cpu.settle += own_time;
                cpu.children += children;
            } else if pid
                .to_str()
                .is_some_and(|pid| tracked.as_deref() == Some(pid))
            {
                cpu.tracked += own_time;
            } else if head.ends_with("(postgres") {
                cpu.postgres += own_time + children;
            } else if head.ends_with("(beam.smp") {
                cpu.rabbitmq += own_time;
            }
        }
        cpu
    }

    /// The average cores each used between `before` and now, over `elapsed`; the children
    /// (the load) are named `children` in the split.
    pub fn since(&self, before: &Self, elapsed: Duration, children: &'static str) -> CpuUse {
        let per_second = |now: f64, then: f64| (now - then) / elapsed.as_secs_f64();
        CpuUse {
            settle: per_second(self.settle, before.settle),
            tracked: per_second(self.tracked, before.tracked),
            children: per_second(self.children, before.children),
            children_are: children,
            postgres: per_second(self.postgres, before.postgres),
            rabbitmq: per_second(self.rabbitmq, before.rabbitmq),
            busy: per_second(self.busy, before.busy),
        }
    }
}

pub struct CpuUse {
    settle: f64,
    tracked: f64,
    children: f64,
    children_are: &'static str,
    postgres: f64,
    rabbitmq: f64,
    busy: f64,
}

impl std::fmt::Display for CpuUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let known = self.settle + self.tracked + self.children + self.postgres + self.rabbitmq;
        write!(
            f,
            "in cores of {}: machine busy {:.2} = settle process {:.2} + PostgreSQL {:.2} + RabbitMQ {:.2}",
            cores(),
            self.busy,
            self.settle,
            self.postgres,
            self.rabbitmq,
        )?;
        if self.tracked > 0.0 {
            write!(f, " + settle serve {:.2}", self.tracked)?;
        }
        if self.children > 0.0 {
            write!(f, " + {} {:.2}", self.children_are, self.children)?;
        }
        write!(f, " + other {:.2}", (self.busy - known).max(0.0))
    }
}
