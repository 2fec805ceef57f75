//! The load generator's one audited `unsafe` call.

/// Lowers the calling thread's timer slack to 1 ns, so its sleeps end within microseconds of
/// their deadline instead of up to 50 µs late (Linux's default slack). Returns whether the
/// kernel accepted it; a refusal only costs precision.
#[allow(unsafe_code)]
pub fn tighten_timer_slack() -> bool {
    // SAFETY: prctl(PR_SET_TIMERSLACK, n) takes an integer argument by value, touches no memory
    // of ours and affects only the calling thread; the varargs are integers as the ABI expects.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_TIMERSLACK,
            1 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    rc == 0
}

/// The calling thread's timer slack in nanoseconds (tests).
#[cfg(test)]
#[allow(unsafe_code)]
pub fn timer_slack() -> i64 {
    // SAFETY: as above; PR_GET_TIMERSLACK reads a per-thread integer and returns it.
    i64::from(unsafe {
        libc::prctl(
            libc::PR_GET_TIMERSLACK,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn slack_is_tightened_for_this_thread_only() {
        std::thread::spawn(|| {
            assert!(super::tighten_timer_slack());
            assert_eq!(super::timer_slack(), 1);
        })
        .join()
        .unwrap();
        assert_ne!(super::timer_slack(), 1, "other threads keep their slack");
    }
}
