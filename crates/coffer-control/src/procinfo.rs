//! Process liveness, to find jobs whose process died (`JobInterrupted`).
//!
//! Uses `/proc` (Linux). A job records its pid and the process start time so a
//! reused pid is not mistaken for the original process. Where `/proc` is not
//! available, every process is assumed alive (jobs are then never reaped).

use std::path::Path;

/// Start time of `pid` in clock ticks since boot, if it is running and not a zombie.
pub(crate) fn process_start(pid: u32) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); starttime is field 22.
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Whether the process that recorded (`pid`, `start`) may still be running.
pub(crate) fn is_alive(pid: i64, start: Option<i64>) -> bool {
    if !Path::new("/proc/self/stat").exists() {
        return true;
    }
    let Ok(pid) = u32::try_from(pid) else {
        return false;
    };
    match process_start(pid) {
        None => false,
        Some(now) => start.is_none_or(|s| s == now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_is_alive() {
        let me = std::process::id();
        let start = process_start(me);
        assert!(is_alive(i64::from(me), start));
        if let Some(s) = start {
            assert!(!is_alive(i64::from(me), Some(s + 1)));
        }
        assert!(!is_alive(-1, None));
    }
}
