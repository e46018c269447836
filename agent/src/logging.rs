//! The log on stderr, for every command: `--log-level` (else `$RUST_LOG`, else `info`) and
//! `--log-format text|json`. JSON is one object per line: `time` (RFC 3339, UTC), `level`,
//! `target` and `message`, as a log shipper reads the events on stdout.
use std::io::Write;

use crate::cli::{LogArgs, LogFormat};

/// Installs the logger. Called once, first thing in `main`.
pub fn init(args: &LogArgs) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if let Some(level) = &args.log_level {
        builder.parse_filters(level);
    }
    builder.target(env_logger::Target::Stderr);
    match args.log_format {
        // Milliseconds: where a start of a few seconds goes is the question these lines answer.
        LogFormat::Text => {
            builder.format_timestamp_millis();
        }
        LogFormat::Json => {
            builder.format(|buf, record| {
                writeln!(
                    buf,
                    "{}",
                    json_line(
                        std::time::SystemTime::now(),
                        record.level(),
                        record.target(),
                        &record.args().to_string()
                    )
                )
            });
        }
    }
    // A second init (tests) keeps the first logger.
    let _ = builder.try_init();
}

/// One JSON log line (without the newline).
pub fn json_line(
    time: std::time::SystemTime,
    level: log::Level,
    target: &str,
    message: &str,
) -> String {
    serde_json::json!({
        "time": crate::timestamp::rfc3339(time),
        "level": level.as_str().to_ascii_lowercase(),
        "target": target,
        "message": message,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_line_is_one_object_with_level_target_and_message() {
        let line = json_line(
            std::time::UNIX_EPOCH,
            log::Level::Warn,
            "iommu_enforcer::daemon",
            "a \"quoted\"\nmessage",
        );
        assert!(!line.contains('\n'), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(v["level"], "warn");
        assert_eq!(v["target"], "iommu_enforcer::daemon");
        assert_eq!(v["message"], "a \"quoted\"\nmessage");
        assert_eq!(v["time"], "1970-01-01T00:00:00.000000Z");
    }
}
