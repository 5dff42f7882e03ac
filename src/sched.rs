//! Scheduler classes for serve's two runtimes (Linux).
//!
//! Nice values alone left a receipt waiting a few milliseconds behind a bulk send: the fair
//! scheduler (EEVDF since Linux 6.6) hands out slices of ~3 ms by default, so a priority
//! thread that wakes on a core a bulk thread is using waits out that thread's slice even at
//! a better nice value. Two changes, neither of which needs privileges:
//!
//! - the priority lane's threads ask for a short slice ([`PRIORITY_SLICE`]): under EEVDF a
//!   task with a shorter slice gets an earlier virtual deadline, so it is picked first when
//!   it wakes (Linux 6.12 and later read `sched_runtime` of `SCHED_OTHER` as that slice;
//!   older kernels ignore it);
//! - scheduled runs inside serve run under `SCHED_IDLE`: they get a core only when nothing
//!   else on the machine wants it, which a newsletter can afford and a receipt cannot.
//!
//! Both are best effort: a kernel that refuses leaves the thread as it was.

/// The slice the priority lane's threads ask for: the kernel's minimum (0.1 ms).
pub const PRIORITY_SLICE_NS: u64 = 100_000;

/// `struct sched_attr` as `sched_setattr(2)` takes it (the `SCHED_ATTR_SIZE_VER1` layout).
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
    sched_util_min: u32,
    sched_util_max: u32,
}

/// Asks for a [`PRIORITY_SLICE_NS`] slice for the calling thread, keeping its nice value.
/// Returns whether the kernel took it.
pub fn short_slice_this_thread() -> bool {
    // SAFETY: getpriority takes plain integers; errno is thread-local and reset first so a
    // legitimate -1 nice is told apart from an error.
    let nice = unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, 0)
    };
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        sched_policy: libc::SCHED_OTHER as u32,
        sched_nice: nice,
        sched_runtime: PRIORITY_SLICE_NS,
        ..SchedAttr::default()
    };
    // SAFETY: the pointer is to a live, correctly sized `sched_attr`; pid 0 is this thread;
    // flags 0. The kernel only reads it.
    unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) == 0 }
}

/// Puts the calling thread under `SCHED_IDLE`. Returns whether the kernel took it.
pub fn idle_this_thread() -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is this thread; `param` lives across the call and is only read.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) == 0 }
}

/// A thread's scheduling policy and slice (ns) as `/proc/PID/task/TID/sched` shows them,
/// for tests and diagnostics; `None` when the file is not there.
pub fn thread_sched(pid: u32, tid: u32) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/sched")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.split(':').next().map(str::trim) == Some(name))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some((field("policy")? as u32, field("se.slice").unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn this_tid() -> u32 {
        // SAFETY: gettid has no preconditions.
        unsafe { libc::gettid() as u32 }
    }

    #[test]
    fn a_thread_can_ask_for_a_short_slice_and_for_idle() {
        std::thread::spawn(|| {
            let pid = std::process::id();
            assert!(short_slice_this_thread(), "sched_setattr refused");
            let (policy, slice) = thread_sched(pid, this_tid()).unwrap();
            assert_eq!(
                (policy, slice),
                (libc::SCHED_OTHER as u32, PRIORITY_SLICE_NS)
            );
            assert!(idle_this_thread(), "SCHED_IDLE refused");
            let (policy, _) = thread_sched(pid, this_tid()).unwrap();
            assert_eq!(policy, libc::SCHED_IDLE as u32);
        })
        .join()
        .unwrap();
    }
}
