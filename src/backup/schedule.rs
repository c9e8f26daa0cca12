//! Cron schedules of EtcdBackups, as pure functions of the time: the controller passes in "now",
//! so tests drive a schedule with a clock of their own.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use k8s_openapi::jiff::Timestamp;

use super::Error;

/// A parsed schedule in its time zone (UTC unless set).
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
    zone: Tz,
}

impl Schedule {
    pub fn parse(expression: &str, zone: Option<&str>) -> Result<Self, Error> {
        let bad = |reason: String| Error::Schedule { schedule: expression.to_owned(), reason };
        let cron = expression.parse::<Cron>().map_err(|e| bad(e.to_string()))?;
        let zone = match zone {
            Some(name) => {
                name.parse::<Tz>().map_err(|_| bad(format!("unknown time zone {name:?}")))?
            }
            None => Tz::UTC,
        };
        Ok(Self { cron, zone })
    }

    /// The latest scheduled time in `(after, now]`: the run that is due now, if any. Runs missed
    /// while the operator was down collapse into this one, as a CronJob's do.
    pub fn due(&self, after: Timestamp, now: Timestamp) -> Option<Timestamp> {
        let latest = self.cron.find_previous_occurrence(&self.at(now)?, true).ok()?;
        let latest = from_chrono(&latest)?;
        (latest > after).then_some(latest)
    }

    /// The first scheduled time after `now`.
    pub fn next_after(&self, now: Timestamp) -> Option<Timestamp> {
        let next = self.cron.find_next_occurrence(&self.at(now)?, false).ok()?;
        from_chrono(&next)
    }

    fn at(&self, time: Timestamp) -> Option<DateTime<Tz>> {
        let utc = DateTime::<Utc>::from_timestamp(
            time.as_second(),
            time.subsec_nanosecond().try_into().ok()?,
        )?;
        Some(self.zone.from_utc_datetime(&utc.naive_utc()))
    }
}

fn from_chrono(time: &DateTime<Tz>) -> Option<Timestamp> {
    Timestamp::new(time.timestamp(), time.timestamp_subsec_nanos().try_into().ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn a_run_is_due_once_its_time_has_come() {
        let hourly = Schedule::parse("0 * * * *", None).unwrap();
        let last = at("2026-11-24T10:00:00Z");
        assert_eq!(hourly.due(last, at("2026-11-24T10:59:59Z")), None);
        assert_eq!(hourly.due(last, at("2026-11-24T11:00:00Z")), Some(at("2026-11-24T11:00:00Z")));
        assert_eq!(hourly.next_after(at("2026-11-24T11:00:00Z")), Some(at("2026-11-24T12:00:00Z")));
    }

    #[test]
    fn missed_runs_collapse_into_the_latest() {
        let hourly = Schedule::parse("0 * * * *", None).unwrap();
        let due = hourly.due(at("2026-11-24T01:00:00Z"), at("2026-11-24T05:30:00Z"));
        assert_eq!(due, Some(at("2026-11-24T05:00:00Z")));
    }

    #[test]
    fn the_time_zone_moves_the_run() {
        let daily = Schedule::parse("0 2 * * *", Some("Europe/Berlin")).unwrap();
        // 02:00 in Berlin in November (CET, UTC+1) is 01:00 UTC.
        assert_eq!(daily.next_after(at("2026-11-24T00:00:00Z")), Some(at("2026-11-24T01:00:00Z")));
    }

    #[test]
    fn bad_schedules_name_themselves() {
        let err = Schedule::parse("every hour", None).unwrap_err().to_string();
        assert!(err.contains("every hour"), "{err}");
        let err = Schedule::parse("0 * * * *", Some("Mars/Olympus")).unwrap_err().to_string();
        assert!(err.contains("Mars/Olympus"), "{err}");
    }
}
