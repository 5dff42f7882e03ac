//! A bulk send gives way on a shared machine: `blast send` lowers the CPU priority (`nice`)
//! and the I/O priority (best-effort class, lowest level) of every thread of its process,
//! so beside `blast serve` the priority lane gets the cores and the disk first. Priorities
//! only matter under contention: on a machine of its own the send loses nothing.
//!
//! Linux keeps both priorities per thread, so each existing thread is changed (from
//! `/proc/self/task`) and threads created later inherit them from their creator.

/// `IOPRIO_CLASS_BE` (best effort) at its lowest level (7), as `ioprio_set` takes it.
const IOPRIO_BE_LOWEST: libc::c_int = (2 << 13) | 7;
/// `IOPRIO_WHO_PROCESS`: with a thread id, that one thread.
const IOPRIO_WHO_PROCESS: libc::c_int = 1;

/// The thread ids of process `pid` (`"self"` for this one), from `/proc`.
fn thread_ids(pid: &str) -> Option<Vec<u32>> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    Some(
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
    )
}

/// Lowers every thread of this process to `nice` (0–19; 0 leaves CPU priority alone) and,
/// when `nice` > 0, to the lowest best-effort I/O priority. Never raises a priority (an
/// already nicer thread stays as it is). Returns what could not be done, for a warning.
pub fn yield_to_others(nice: i32) -> Vec<String> {
    let mut problems = Vec::new();
    if nice <= 0 {
        return problems;
    }
    let nice = nice.min(19);
    // Without /proc: the calling thread (0) only.
    for tid in thread_ids("self").unwrap_or_else(|| vec![0]) {
        // SAFETY: getpriority/setpriority/ioprio_set take plain integers and touch no memory
        // of ours; a thread that exited meanwhile makes them fail with ESRCH, which is fine.
        unsafe {
            *libc::__errno_location() = 0;
            let cur = libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t);
            if cur < nice && libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) != 0 {
                problems.push(format!(
                    "setpriority({tid}, {nice}): {}",
                    std::io::Error::last_os_error()
                ));
            }
            if libc::syscall(
                libc::SYS_ioprio_set,
                IOPRIO_WHO_PROCESS,
                tid,
                IOPRIO_BE_LOWEST,
            ) != 0
            {
                problems.push(format!(
                    "ioprio_set({tid}): {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
    }
    problems.dedup();
    problems
}

/// The nice value of thread `tid` of process `pid`, from `/proc` (tests and `status`).
pub fn thread_nice(pid: u32, tid: u32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    // Field 19; the command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(16)?.parse().ok()
}

/// The nice value of every thread of process `pid`.
pub fn process_nice(pid: u32) -> Vec<i32> {
    thread_ids(&pid.to_string())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|tid| thread_nice(pid, tid))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_its_own_nice() {
        let me = std::process::id();
        let all = super::process_nice(me);
        assert!(!all.is_empty());
        assert!(all.iter().all(|n| (-20..=19).contains(n)), "{all:?}");
    }
}
