//! What a command's run means to delivery: the command destination's own reading of exit
//! codes, signals and its timeout (nothing else interprets them).

use std::time::Duration;

use crate::domain::Verdict;

/// What a finished run means: exit 0 delivered, a listed exit code permanent, any other
/// exit code, a signal or the timeout worth another try. Returns (verdict, class, summary).
pub(super) fn judge(
    status: &std::io::Result<std::process::ExitStatus>,
    permanent_exit_codes: &[i32],
    timeout: Duration,
) -> (Verdict, &'static str, String) {
    use std::os::unix::process::ExitStatusExt as _;
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(0), _) => (Verdict::Delivered, "exit_0", "exit 0".into()),
            (Some(code), _) if permanent_exit_codes.contains(&code) => (
                Verdict::Permanent,
                "exit_nonzero",
                format!("exit {code} (permanent)"),
            ),
            (Some(code), _) => (Verdict::Retryable, "exit_nonzero", format!("exit {code}")),
            (None, signal) => (
                Verdict::Retryable,
                "signal",
                format!("killed by signal {}", signal.unwrap_or(0)),
            ),
        },
        Err(_) => (
            Verdict::Retryable,
            "timeout",
            format!("timeout after {}", humantime::format_duration(timeout)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt as _;
    use std::process::ExitStatus;

    use super::*;

    #[test]
    fn exit_codes_signals_and_timeouts_follow_the_table() {
        let exit = |code: i32| Ok(ExitStatus::from_raw(code << 8));
        let timeout = Duration::from_secs(5);
        let table: Vec<(std::io::Result<ExitStatus>, Verdict, &str, &str)> = vec![
            (exit(0), Verdict::Delivered, "exit_0", "exit 0"),
            (exit(3), Verdict::Retryable, "exit_nonzero", "exit 3"),
            (
                exit(64),
                Verdict::Permanent,
                "exit_nonzero",
                "exit 64 (permanent)",
            ),
            (
                Ok(ExitStatus::from_raw(9)),
                Verdict::Retryable,
                "signal",
                "killed by signal 9",
            ),
            (
                Err(std::io::Error::other("timeout")),
                Verdict::Retryable,
                "timeout",
                "timeout after 5s",
            ),
        ];
        for (status, verdict, class, summary) in table {
            assert_eq!(
                judge(&status, &[64], timeout),
                (verdict, class, summary.to_owned()),
                "{status:?}"
            );
        }
    }
}
