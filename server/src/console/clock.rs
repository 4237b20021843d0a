//! UTC times for the console: seconds since the epoch as `2026-12-07 15:20`, and the
//! browser's `datetime-local` value (`2026-12-07T15:20`, read as UTC) back.

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of `days` since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `secs` since the epoch as `YYYY-MM-DD HH:MM` (UTC).
pub fn utc_minutes(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rest = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60
    )
}

/// `ms` since the epoch as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn utc_seconds(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    format!("{}:{:02}", utc_minutes(secs), secs.rem_euclid(60))
}

/// A `datetime-local` value (`YYYY-MM-DDTHH:MM`, seconds optional) as ms since the
/// epoch, read as UTC; `None` when it is not one.
pub fn parse_local(text: &str) -> Option<i64> {
    let (date, time) = text.trim().split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
    let (h, mi) = (t.next()??, t.next()??);
    let s = t.next().flatten().unwrap_or(0);
    let valid = (1..=12).contains(&mo)
        && (1..=31).contains(&da)
        && (0..24).contains(&h)
        && (0..60).contains(&mi)
        && (0..60).contains(&s);
    valid.then(|| ((days_from_civil(y, mo, da) * 86_400) + h * 3600 + mi * 60 + s) * 1000)
}

/// ms since the epoch as a `datetime-local` value (UTC).
pub fn to_local(ms: i64) -> String {
    utc_minutes(ms.div_euclid(1000)).replace(' ', "T")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_and_write_as_utc() {
        assert_eq!(utc_minutes(0), "1970-01-01 00:00");
        assert_eq!(utc_minutes(1_796_656_134), "2026-12-07 15:08");
        assert_eq!(utc_seconds(951_782_400_000 + 59_000), "2000-02-29 00:00:59");
        assert_eq!(parse_local("2026-12-07T15:08"), Some(1_796_656_080_000));
        assert_eq!(to_local(1_796_656_080_000), "2026-12-07T15:08");
        assert_eq!(parse_local("2000-02-29T00:00:59"), Some(951_782_459_000));
        for bad in [
            "",
            "2026-13-01T00:00",
            "2026-12-07",
            "x-y-zT1:2",
            "2026-12-07T25:00",
        ] {
            assert_eq!(parse_local(bad), None, "{bad}");
        }
    }
}
